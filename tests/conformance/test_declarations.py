"""Each registered provider declares what the exporter, the alert rules and a reader rely on, and ships
with what a user needs: a demo entry, a docs page, a README row, an example config `--check-config`
accepts, and a data-age default in the generated alert rules."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml

from aht_exporter.cli import main
from aht_exporter.health import SourceHealth
from aht_exporter.model import Field
from aht_exporter.providers import PROVIDERS
from aht_exporter.providers.base import AverageProvider, BucketProvider, DataAge
from aht_exporter.simulator.demo import demo_config
from grafana.aht_mixin.rules import DATA_AGE_DEFAULTS
from tests.conformance.cases import NAMES, ROOT, demo_of
from tests.unit.test_shipped_config import SAMPLE_VALUES, readme_variables

pytestmark = pytest.mark.parametrize("name", NAMES)

# No server listens here: the providers are only built, never asked for anything.
NOWHERE = "http://127.0.0.1:9"


def test_its_name_is_its_registry_key_and_its_config_model_says_so(name: str) -> None:
    cls = PROVIDERS[name]
    assert cls.name == name
    provider_field = cls.config_model.model_fields.get("provider")
    assert provider_field is not None, f"{cls.config_model.__name__} has no `provider` key"
    assert typing.get_args(provider_field.annotation) == (name,), (
        f"{cls.config_model.__name__}.provider is {provider_field.annotation}, not Literal[{name!r}]"
    )


def test_it_returns_one_result_kind(name: str) -> None:
    """Buckets or the vendor's own averages: the store and the exposition know only these two."""
    assert issubclass(PROVIDERS[name], BucketProvider | AverageProvider)


def test_it_declares_its_data_age_and_history(name: str) -> None:
    cls = PROVIDERS[name]
    assert isinstance(cls.data_age, DataAge), f"{name}: data_age is {cls.data_age!r}"
    assert cls.data_age.bucket > 0 and cls.data_age.delay >= 0, cls.data_age
    assert cls.history is None or (isinstance(cls.history, int) and cls.history > 0), cls.history
    assert cls.names_every >= 0


def test_the_fields_of_its_demo_sources_are_model_fields(name: str) -> None:
    cls = PROVIDERS[name]
    config = demo_config(demo_of(name).sources(NOWHERE))
    sources = [s for s in config.sources if s.provider == name]
    assert sources, f"the demo entry of {name} makes no {name} source"
    for source in sources:
        provider = cls(source, SourceHealth(source.name, name, source.stale_after))
        fields = provider.fields
        assert isinstance(fields, frozenset), f"{source.name}: fields is a {type(fields).__name__}"
        assert all(isinstance(f, Field) for f in fields), f"{source.name}: {sorted(map(str, fields))}"
        if issubclass(cls, BucketProvider):
            assert fields, f"{source.name}: a provider of buckets reports at least one field"


def docs_page(name: str) -> Path | None:
    for stem in dict.fromkeys([name, name.replace("_", "-")]):
        page = ROOT / "docs" / "providers" / f"{stem}.md"
        if page.is_file():
            return page
    return None


def test_it_has_a_docs_page_listed_in_the_index(name: str) -> None:
    page = docs_page(name)
    dash = name.replace("_", "-")
    assert page is not None, f"no docs/providers/{name}.md" + (f" nor docs/providers/{dash}.md" if dash != name else "")
    index = (ROOT / "docs" / "providers" / "README.md").read_text()
    linked = f"]({page.name})" in index
    assert linked, f"docs/providers/README.md does not link {page.name} in its table"


def test_it_has_a_row_in_the_readme_provider_table(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[: readme.index("\n## ")]  # the table under the title, before the first section
    rows = [line for line in table.splitlines() if line.startswith("| ") and f"(`{name}`)" in line]
    assert len(rows) == 1, f"README.md's provider table has no row naming (`{name}`)"


def test_its_example_config_passes_check_config(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the variables README's table names for it (tests/unit/test_shipped_config.py holds the
    example to exactly those): what a user following the README runs."""
    example = ROOT / "examples" / f"{name}.yaml"
    others = sorted(p.name for p in (ROOT / "examples").glob(f"{name.replace('_', '-')}*.yaml"))
    found = example.is_file()
    assert found, f"no examples/{name}.yaml" + (f" (found {', '.join(others)})" if others else "")
    required, _ = readme_variables(f"examples/{example.name}")
    for variable in required:
        monkeypatch.setenv(variable, SAMPLE_VALUES.get(variable, "x-value"))
    monkeypatch.chdir(ROOT)
    assert main(["--check-config", f"--config.file=examples/{example.name}"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"provider: {name}" in out, out


def test_the_generated_alert_rules_hold_its_data_age_default(name: str) -> None:
    stale_after = PROVIDERS[name].data_age.stale_after
    assert DATA_AGE_DEFAULTS.get(name) == stale_after
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "aht-exporter.rules.yml").read_text())
    defaults = {
        rule["labels"]["provider"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("record") == "aht_exporter:data_age_threshold_default_seconds"
    }
    assert defaults.get(name) == f"vector({stale_after})", (
        f"deploy/prometheus/aht-exporter.rules.yml says {defaults.get(name)!r} for {name}: "
        "run `python grafana/generate.py`"
    )
