"""Defence in depth for secrets: whatever text leaves the process passes through a Redactor.

Secrets are never put in messages on purpose; this catches a vendor that echoes one back, in whatever
form it echoes it: raw, URL-encoded (a form body, a query string), JSON-escaped, HTML-escaped, base64
(an HTTP Basic credential `id:secret`, or the secret inside any other base64 text), or a long enough
piece of any of these (a reply cut short, a snippet cut at its length limit).

Two kinds of secret are known: the config's (at start), and the credentials made at run time (tokens,
signed JWTs, the Basic header actually sent), which the HTTP client and the token parsers hand to a
`RuntimeSecrets` registry as they are issued or sent. Log lines are redacted whole by their formatter
(logs.install_redactor), tracebacks and non-text fields included; poll errors by the scheduler.
"""

from __future__ import annotations

import base64
import html
import json
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Iterator
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

from aht_exporter.config import Config, SourceConfig
from aht_exporter.model import clean_text

MASK = "<redacted>"
# Any piece of a secret at least this long is masked: long enough that ordinary text never matches a
# random credential by chance, short enough that a cut-off echo (an 80-character snippet) is caught.
FRAGMENT = 12
# A configured secret shorter than this is masked only whole: a very short value would mask innocent
# text and is too weak to be worth hiding anyway. Runtime credentials are random and long; one shorter
# than RUNTIME_MIN_LENGTH is not one (a test's "tok-1"), and masking it would only garble messages.
MIN_LENGTH = 4
RUNTIME_MIN_LENGTH = 8
# A base64 run that short could be any word: the base64 forms of a secret are masked from this length.
MIN_BASE64 = 8
# Distinct characters a piece needs to be masked as one (a random 12-character piece has about 11).
MIN_VARIETY = 5
# The runtime credentials remembered, newest kept: a token lives an hour, a Kore.ai JWT one request.
RUNTIME_CAPACITY = 32
# Pieces are taken from the first this-many characters of each form, which bounds the memory a very long
# credential costs (32 JWTs of 2 KiB: about 64,000 pieces, a few MB); the whole form is still masked.
MAX_FRAGMENT_SOURCE = 2048

_PERCENT = re.compile(r"%[0-9A-F]{2}")
# Keys of the config whose value, joined to a secret with ':', makes an HTTP Basic credential.
_BASIC_USER_KEYS = ("client_id", "user_name", "username", "user", "consumer_key", "app_id")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a secret file may hold anything


def _text_forms(secret: str) -> set[str]:
    """The secret as it reads inside a URL, a form body, a JSON string or HTML."""
    out = {secret}
    for safe in ("", "/"):  # "/" is quote()'s own default; form bodies encode it
        for encoded in (
            quote(secret, safe=safe, errors="surrogatepass"),
            quote_plus(secret, safe=safe, errors="surrogatepass"),
        ):
            out |= {encoded, _PERCENT.sub(lambda m: m.group(0).lower(), encoded)}
    out.add(quote(quote(secret, safe="", errors="surrogatepass"), safe=""))  # a URL inside a URL
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        upper_hex = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped)
        out |= {escaped, upper_hex, escaped.replace("/", "\\/")}  # some encoders escape "/" too
    out |= {html.escape(secret), html.escape(secret, quote=False)}
    return out


def _base64_forms(raw: bytes) -> set[str]:
    """`raw` base64-encoded on its own, and the part of its encoding that is the same wherever it sits
    inside a longer encoded text (three alignments): a secret inside any base64 blob is caught."""
    out: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        out |= {whole, whole.rstrip("=")}
        for offset, start in ((0, 0), (1, 2), (2, 3)):
            end = 4 * ((offset + len(raw)) // 3)  # the characters after it also encode what follows
            out.add(encode(b"\0" * offset + raw).decode()[start:end])
    return {form for form in out if len(form) >= MIN_BASE64}


def forms(secret: str) -> set[str]:
    """Every form a secret can take in a text: see the module docstring."""
    return _text_forms(secret) | _base64_forms(_utf8(secret))


def basic_forms(user: str, secret: str) -> set[str]:
    """The HTTP Basic credential `base64(user:secret)` (RFC 7617), standard and URL-safe, padded or not."""
    out: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(_utf8(f"{user}:{secret}")).decode()
        out |= {whole, whole.rstrip("=")}
    return out


def _pieces(text: str) -> Iterator[str]:
    """The FRAGMENT-long pieces of `text` worth masking: a piece of few distinct characters (a run of
    padding, of zeros) is as likely to be anything else, and is no clue to the secret."""
    head = text[:MAX_FRAGMENT_SOURCE]
    pieces = (head[i : i + FRAGMENT] for i in range(len(head) - FRAGMENT + 1))
    return (p for p in pieces if len(set(p)) >= MIN_VARIETY)


def _longest_first(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values), key=len, reverse=True))


def mask(text: str, literals: Iterable[str], pieces: Collection[Collection[str]], public: Collection[str] = ()) -> str:
    """`text` with each literal replaced, then every run covered by a known FRAGMENT-long piece that is not
    also a piece of the config's `public` text."""
    for literal in literals:
        if literal in text:
            text = text.replace(literal, MASK)
    if len(text) < FRAGMENT or not any(pieces):
        return text
    spans: list[list[int]] = []
    for i in range(len(text) - FRAGMENT + 1):
        piece = text[i : i + FRAGMENT]
        if any(piece in known for known in pieces) and piece not in public:
            if spans and i <= spans[-1][1]:
                spans[-1][1] = i + FRAGMENT
            else:
                spans.append([i, i + FRAGMENT])
    if not spans:
        return text
    out, at = [], 0
    for start, end in spans:
        out += [text[at:start], MASK]
        at = end
    out.append(text[at:])
    return "".join(out)


class RuntimeSecrets:
    """Credentials made at run time, the newest `capacity` of them: each in every form, and its pieces.

    Written by the event loop (the HTTP client, token parsers), read by whichever thread formats a log
    line: a writer swaps in a new literal tuple, and a reader's membership test on the piece counter is
    atomic.
    """

    def __init__(self, capacity: int = RUNTIME_CAPACITY) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._forms: OrderedDict[str, tuple[set[str], list[str]]] = OrderedDict()
        self._pieces: Counter[str] = Counter()
        self.literals: tuple[str, ...] = ()

    @property
    def pieces(self) -> Collection[str]:
        return self._pieces.keys()

    def add(self, value: str) -> None:
        """Remember a credential; one seen before becomes the newest again."""
        value = value.strip()
        if len(value) < RUNTIME_MIN_LENGTH:
            return
        with self._lock:
            if value in self._forms:
                self._forms.move_to_end(value)
                return
            text_forms = _text_forms(value)
            pieces = [p for form in text_forms for p in _pieces(form)]
            self._forms[value] = (text_forms | _base64_forms(_utf8(value)), pieces)
            self._pieces.update(pieces)
            while len(self._forms) > self._capacity:
                _, (_, old) = self._forms.popitem(last=False)
                self._pieces.subtract(old)
                for p in old:
                    if self._pieces[p] <= 0:
                        del self._pieces[p]
            self.literals = _longest_first(f for all_forms, _ in self._forms.values() for f in all_forms)

    def __contains__(self, value: str) -> bool:
        return value.strip() in self._forms


# The process's runtime credentials. Every Redactor and ApiClient uses this one unless handed another:
# the log formatter's Redactor and the scheduler's are built apart from the clients that learn tokens.
RUNTIME = RuntimeSecrets()


class Redactor:
    def __init__(
        self,
        secrets: Iterable[str],
        *,
        basic: Iterable[tuple[str, str]] = (),
        runtime: RuntimeSecrets | None = RUNTIME,
        min_length: int = MIN_LENGTH,
        public: Iterable[str] = (),
    ) -> None:
        kept = {s for s in secrets if len(s) >= min_length}
        every: set[str] = set()
        for secret in kept:
            every |= forms(secret)
        for user, secret in basic:
            if len(secret) >= min_length:
                every |= basic_forms(user, secret)
        # Longest first, so a secret that contains another is masked whole.
        self._literals = _longest_first(every)
        # A piece that the config's own public text holds (a source name, a user name, a URL) tells nothing
        # of a secret, configured or sent at run time (Ozonetel's apiKey header), and masking it would garble
        # every log line that names that source.
        self._public = frozenset(t[i : i + FRAGMENT] for t in public for i in range(len(t) - FRAGMENT + 1))
        self._pieces = frozenset(p for form in every for p in _pieces(form) if p not in self._public)
        self._runtime = runtime

    @classmethod
    def for_config(cls, config: Config, *, runtime: RuntimeSecrets | None = RUNTIME) -> Redactor:
        values: list[str] = []
        basic: list[tuple[str, str]] = []
        public: list[str] = []
        for source in config.sources:
            secrets = _secrets_of(source)
            values += secrets
            users = [*_basic_users(source), *secrets]  # OAuth 1.0a pairs one secret with another
            basic += [(user, secret) for user in users for secret in secrets if user != secret]
            public += _public_text(source)
        return cls(values, basic=basic, runtime=runtime, public=public)

    def __call__(self, text: str) -> str:
        runtime = self._runtime
        if runtime is None:
            return mask(text, self._literals, (self._pieces,))
        text = mask(text, self._literals, ())
        return mask(text, runtime.literals, (self._pieces, runtime.pieces), self._public)

    def shown(self, text: str) -> str:
        """`text` as it may be shown (a log line's field, the status page, `aht_exporter_*` health): secrets
        masked first, since a cut could split one, then made printable and cut to a line (`clean_text`)."""
        return clean_text(self(text))


def _secrets_of(source: SourceConfig) -> list[str]:
    values = []
    for name in type(source).model_fields:
        value = getattr(source, name)
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    return values


def _public_text(source: SourceConfig) -> list[str]:
    """The source's values that are no secret (its name, ids, URLs), as they are shown."""
    out = []
    for name in type(source).model_fields:
        value = getattr(source, name)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list | tuple):
            out += [v for v in value if isinstance(v, str)]
    return out


def _basic_users(source: SourceConfig) -> list[str]:
    return [v for k in _BASIC_USER_KEYS if isinstance(v := getattr(source, k, None), str) and v]
