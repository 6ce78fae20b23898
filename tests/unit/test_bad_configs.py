"""The bad-config table: every broken config exits 2 with one line naming the file and key path.

Run through the CLI entry point in-process (the subprocess tests in tests/e2e/test_cli.py show the same
holds for a real process): no traceback, nothing on stdout, exactly one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aht_exporter.cli import main

GENESYS = "  - name: g\n    provider: genesys\n    region: mypurecloud.ie\n    client_id: id\n    client_secret: s3\n"


LIVEPERSON = "name: l, provider: liveperson, account_id: '1', client_id: a, client_secret: b"
OZONETEL = "name: o, provider: ozonetel, user_name: u, api_key: k"
KORE = "name: k, provider: koreai, account_id: a, org_id: o, client_id: c, client_secret: s"


def source(extra: str = "", base: str = GENESYS) -> str:
    return "sources:\n" + base + extra


def alias_bomb(indent: str) -> str:
    """A billion laughs: nine lines of ten aliases each, 10^9 values once expanded, in 600 bytes."""
    lines = [f"{indent}l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)]
    return "".join(lines)


def nested(depth: int, open_: str = "{a: ", close: str = "}") -> str:
    return open_ * depth + "1" + close * depth


def block_nested(depth: int, indent: int = 6) -> str:
    return "".join(" " * (indent + i) + "a:\n" for i in range(depth))


URLS = "    base_url: {}\n    login_url: https://login.example.com\n"


CASES: list[tuple[str, str, str]] = [
    # (case id, config text, expected stderr after "<file>: ")
    ("yaml-syntax", "sources: [\n", "line 2: YAML syntax error"),
    ("yaml-tab", "sources:\n\t- name: g\n", "line 2: YAML syntax error"),
    ("not-a-mapping", "- just\n- a list\n", "the file must be a mapping with a `sources` list"),
    ("empty-file", "", "the file must be a mapping with a `sources` list"),
    ("unknown-top-key", source() + "extra: 1\n", "extra: unknown key"),
    ("no-sources", "defaults: {}\n", "sources: must be a non-empty list of sources"),
    ("empty-sources", "sources: []\n", "sources: must be a non-empty list of sources"),
    ("source-not-mapping", "sources:\n  - genesys\n", "sources[0]: must be a mapping"),
    ("unknown-provider", "sources:\n  - {name: a, provider: avaya}\n", "sources[0].provider: 'avaya' is not a known"),
    ("missing-provider", "sources:\n  - {name: a}\n", "sources[0].provider: None is not a known provider"),
    ("unknown-source-key", source("    clientsecret: typo\n"), "sources[0].clientsecret: unknown key"),
    ("defaults-unknown-key", "defaults: {evry: 5m}\n" + source(), "defaults.evry: unknown key"),
    ("defaults-not-mapping", "defaults: [5m]\n" + source(), "defaults: must be a mapping"),
    ("defaults-bad-duration", "defaults: {every: five}\n" + source(), "defaults.every: 'five' is not a duration"),
    (
        "missing-name",
        "sources:\n  - {provider: genesys, region: x.com, client_id: a, client_secret: b}\n",
        "sources[0].name: is required",
    ),
    ("bad-name", source().replace("name: g", "name: Genesys EU"), "sources[0].name: String should match pattern"),
    ("duplicate-names", "sources:\n" + GENESYS + GENESYS, "sources[1].name: 'g' is already used by sources[0]"),
    ("missing-secret", source().replace("    client_secret: s3\n", ""), "sources[0].client_secret: is required"),
    ("wrong-type-timeout", source("    timeout: 30\n"), "sources[0].timeout: 30 is not a duration string"),
    ("wrong-type-stale", source("    stale_after: many\n"), "sources[0].stale_after: Input should be a valid integer"),
    ("zero-max-series", source("    max_series: 0\n"), "sources[0].max_series: Input should be greater than"),
    ("every-not-5m", source("    every: 3m\n"), "sources[0].every: 3m is not a whole multiple of 5m"),
    ("delay-too-long", source("    delay: 5m\n"), "sources[0].delay: 5m is outside 0s..4m"),
    ("bad-duration-unit", source("    delay: 1x\n"), "sources[0].delay: '1x' is not a duration"),
    ("window-not-multiple", source("    windows: [30m, 45m]\n"), "sources[0].windows[1]: 45m is not a multiple"),
    ("window-duplicate", source("    windows: [1h, 60m]\n"), "sources[0].windows[1]: 60m is listed twice"),
    ("windows-empty", source("    windows: []\n"), "sources[0].windows: needs at least one window"),
    ("windows-not-list", source("    windows: 1h\n"), "sources[0].windows: Input should be a valid list"),
    ("bucket-unsupported", source("    bucket: 5m\n"), "sources[0].bucket: 5m is not supported"),
    ("defaults-empty-list", "defaults: []\n" + source(), "defaults: must be a mapping"),
    ("duplicate-key", source("    client_id: again\n"), "line 7: key 'client_id' is set twice in the same mapping"),
    ("stale-after-bool", source("    stale_after: true\n"), "sources[0].stale_after: Input should be a valid integer"),
    ("empty-secret", source().replace("client_secret: s3", "client_secret: ''"), "sources[0].client_secret: must not"),
    (
        "defaults-every-not-5m",
        "defaults: {every: 7m}\n" + source(),
        "defaults.every: 7m is not a whole multiple of 5m (in sources[0], which inherits it)",
    ),
    (
        "defaults-window-not-multiple",
        "defaults: {windows: [45m]}\n" + source(),
        "defaults.windows[0]: 45m is not a multiple of the source's 30m bucket (in sources[0], which inherits it)",
    ),
    ("group-by-unknown", source("    group_by: [skill]\n"), "sources[0].group_by[0]: Input should be"),
    (
        "missing-env",
        source().replace("client_secret: s3", "client_secret: ${NOPE_SECRET}"),
        "sources[0].client_secret: environment variable NOPE_SECRET is not set",
    ),
    (
        "missing-secret-file",
        source().replace("client_secret: s3", "client_secret_file: /nonexistent/secret"),
        "sources[0].client_secret_file: cannot read /nonexistent/secret: No such file or directory",
    ),
    ("secret-and-file", source("    client_secret_file: /x\n"), "sources[0].client_secret_file: set either"),
    (
        "http-public-host",
        source().replace(
            "    region: mypurecloud.ie\n",
            "    base_url: http://api.example.com\n    login_url: https://login.example.com\n",
        ),
        "sources[0].base_url: plain http:// is refused for a non-loopback host",
    ),
    (
        "not-a-url",
        source().replace(
            "    region: mypurecloud.ie\n", "    base_url: api.example.com\n    login_url: https://x.com\n"
        ),
        "sources[0].base_url: 'api.example.com' is not an http(s) URL",
    ),
    ("region-and-base-url", source("    base_url: https://api.example.com\n"), "sources[0].region: set either"),
    ("no-region", source().replace("    region: mypurecloud.ie\n", ""), "sources[0].region: set region"),
    (
        "base-url-without-login",
        source().replace("    region: mypurecloud.ie\n", "    base_url: https://a.example\n"),
        "sources[0].login_url: is required with base_url",
    ),
    ("query-span", source("    max_query_span: 10m\n"), "sources[0].max_query_span: 10m is not a multiple"),
    (
        "ozonetel-no-targets",
        "sources:\n  - {name: o, provider: ozonetel, user_name: u, api_key: k}\n",
        "sources[0].agents: list at least one agent or campaign",
    ),
    (
        "ozonetel-windows",
        f"sources:\n  - {{{OZONETEL}, agents: [a], windows: [1h]}}\n",
        "sources[0].windows: does not apply to ozonetel",
    ),
    (
        "ozonetel-bad-method",
        f"sources:\n  - {{{OZONETEL}, agents: [a], method: PUT}}\n",
        "sources[0].method: Input should be 'POST' or 'GET'",
    ),
    (
        "liveperson-window-too-long",
        f"sources:\n  - {{{LIVEPERSON}, windows: [1d]}}\n",
        "sources[0].windows[0]: 1d does not fit LivePerson's 1440-minute timeframe",
    ),
    (
        "liveperson-oauth1-half",
        "sources:\n  - {name: l, provider: liveperson, account_id: '1', auth: oauth1, consumer_key: a}\n",
        "sources[0].consumer_secret: is required with auth: oauth1",
    ),
    (
        "liveperson-skill-not-id",
        f"sources:\n  - {{{LIVEPERSON}, skills: [Sales]}}\n",
        "sources[0].skills: 'Sales' is not a LivePerson id",
    ),
    (
        "koreai-page-size",
        f"sources:\n  - {{{KORE}, page_size: 500}}\n",
        "sources[0].page_size: Input should be less than or equal to 100",
    ),
    (
        "koreai-time-unit",
        f"sources:\n  - {{{KORE}, time_unit: h}}\n",
        "sources[0].time_unit: Input should be 'ms' or 's'",
    ),
    (
        "koreai-group-by-agent",
        f"sources:\n  - {{{KORE}, group_by: [agent]}}\n",
        "sources[0].group_by[0]: Input should be 'media_type' or 'queue'",
    ),
    # Issue 12, hostile configs: each crashed, hung or was accepted before.
    ("alias-bomb-in-a-source", source("    x:\n" + alias_bomb("      ")), "line 12: more than 100000 values once its"),
    ("alias-bomb-in-defaults", "defaults:\n" + alias_bomb("  ") + source(), "line 6: more than 100000 values once its"),
    ("recursive-alias", source("    x: &r [1, *r]\n"), "line 7: alias *r is inside the node it names"),
    ("deep-flow-mappings", source(f"    x: {nested(1000)}\n"), "line 7: mappings and lists are nested more than 32"),
    (
        "deep-flow-lists",
        source(f"    x: {nested(500, '[', ']')}\n"),
        "line 7: mappings and lists are nested more than",
    ),
    (
        "deep-block-mappings",
        source("    x:\n" + block_nested(1000)),
        "line 37: mappings and lists are nested more than",
    ),
    ("list-as-key", "? [a, b]\n: 1\n" + source(), "line 1: a key must be a plain value, not a list or a mapping"),
    ("mapping-as-key", source("    ? {a: 1}\n    : 1\n"), "line 7: a key must be a plain value, not a list or a"),
    ("provider-a-list", "sources:\n  - {name: g, provider: [genesys]}\n", "sources[0].provider: ['genesys'] is not a"),
    ("impossible-date", source("    every: 2026-02-30\n"), "line 7: cannot read this value: day is out of range"),
    ("int-tag-on-text", source("    stale_after: !!int three\n"), "line 7: cannot read this value: invalid literal"),
    ("key-with-a-newline", source() + '"bad\\nkey": 1\n', "'bad\\nkey': unknown key"),
    ("every-absurd", source("    every: 100000000000000000000d\n"), "sources[0].every: '100000000000000000000d' has a"),
    ("every-beyond-a-day", source("    every: 2d\n"), "sources[0].every: 2d is longer than 1d, the longest cadence"),
    (
        "window-absurd",
        source("    windows: [99999999999999999999999h]\n"),
        "sources[0].windows[0]: '99999999999999999999999h' has a number of more than 10 digits",
    ),
    (
        "window-beyond-a-week",
        source("    windows: [30m, 30d]\n"),
        "sources[0].windows[1]: 30d is longer than 7d, the longest window a genesys source can serve",
    ),
    (
        "defaults-window-beyond-a-week",
        "defaults: {windows: [8d]}\n" + source(),
        "defaults.windows[0]: 8d is longer than 7d, the longest window a genesys source can serve (in sources[0]",
    ),
    (
        "too-many-windows",
        source(f"    windows: [{', '.join(f'{30 * (i + 1)}m' for i in range(17))}]\n"),
        "sources[0].windows: List should have at most 16 items",
    ),
    ("timeout-an-hour", source("    timeout: 1h\n"), "sources[0].timeout: 1h is longer than 5m, the longest request"),
    ("timeout-not-below-every", source("    timeout: 5m\n"), "sources[0].timeout: 5m is not shorter than every (5m)"),
    ("refresh-a-month", source("    refresh: 30d\n"), "sources[0].refresh: 30d is longer than 7d, the longest window"),
    ("query-span-beyond-a-week", source("    max_query_span: 8d\n"), "sources[0].max_query_span: 8d is longer than 7d"),
    (
        "liveperson-every-a-day",
        f"sources:\n  - {{{LIVEPERSON}, every: 1d, windows: [30m]}}\n",
        "sources[0].windows[0]: 30m does not fit LivePerson's 1440-minute timeframe, which counts back from now: "
        "with every 1d and delay 1m no window fits",
    ),
    (
        "liveperson-refresh-beyond-its-day",
        f"sources:\n  - {{{LIVEPERSON}, refresh: 2d}}\n",
        "sources[0].refresh: 2d is longer than 1d, the longest window a liveperson source can serve",
    ),
    (
        "koreai-rate-limit-absurd",
        f"sources:\n  - {{{KORE}, rate_limit: 10000000}}\n",
        "sources[0].rate_limit: 10000000 is",
    ),
    (
        "ozonetel-rate-limit-absurd",
        f"sources:\n  - {{{OZONETEL}, agents: [a], rate_limit: {10**30}}}\n",
        "sources[0].rate_limit: 1000000000000000000000000000000 is more than 60000 requests a minute",
    ),
    (
        "base-url-with-password",
        source().replace("    region: mypurecloud.ie\n", URLS.format("https://user:hunter2@proxy.example/api")),
        "sources[0].base_url: must not contain `@`: a user name or password in a URL is refused (the URL is not shown",
    ),
    (
        "login-url-with-password-not-a-url",
        source()
        .replace("    region: mypurecloud.ie\n", URLS.format("https://api.example"))
        .replace("https://login.example.com", "ftp://user:hunter2@login.example"),
        "sources[0].login_url: must not contain `@`",
    ),
    (
        "base-url-port-out-of-range",
        source().replace("    region: mypurecloud.ie\n", URLS.format("https://api.example.com:99999")),
        "sources[0].base_url: 'https://api.example.com:99999' is not a valid URL (Port out of range",
    ),
    (
        "base-url-broken-ipv6",
        source().replace("    region: mypurecloud.ie\n", URLS.format("https://[::1/api")),
        "sources[0].base_url: 'https://[::1/api' is not a valid URL (Invalid IPv6 URL)",
    ),
    (
        "liveperson-domain-with-password",
        f"sources:\n  - {{{LIVEPERSON}, domain: 'user:hunter2@va.data.liveperson.net'}}\n",
        "sources[0].domain: '***@va.data.liveperson.net' is not a host name",
    ),
    (
        "secret-file-dev-zero",
        source().replace("client_secret: s3", "client_secret_file: /dev/zero"),
        "sources[0].client_secret_file: /dev/zero is a character device, not a regular file",
    ),
    (
        "second-source-broken",
        "sources:\n" + GENESYS + GENESYS.replace("name: g", "name: h") + "    every: 1m\n",
        "sources[1].every: 1m is not a whole multiple of 5m",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_broken_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    code = main([f"--config.file={path}", "--check-config"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"{path}: {expected}"), err
    assert "Traceback" not in err
    assert "hunter2" not in err  # the password of the URL rows


def test_the_table_has_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)
