"""The Genesys `media_types` filter: only Genesys's own media types, sent unchanged; anything else is a config error.

The allowed values are the `mediaType` enum of Genesys's Python SDK (PureCloudPlatformClientV2,
AnalyticsSession.media_type), which test_genesys_sdk_contract.py compares with MEDIA_TYPES.
"""

import json

import pytest

from aht_exporter.model import ConfigError
from aht_exporter.providers.genesys import MEDIA_TYPES, query_body
from aht_exporter.registry import parse_config
from aht_exporter.timebuckets import parse_iso
from tests.unit.genesys_config import genesys_config

NINE = int(parse_iso("2026-03-02T09:00:00Z"))
ALLOWED = (
    "callback, chat, cobrowse, email, internalmessage, message, screenmonitoring, screenshare, unknown, video, voice"
)


@pytest.mark.parametrize(
    ("media_types", "index", "shown"),
    [
        (["call"], 0, "'call'"),  # the Genesys UI's word for voice
        (["voice", "Voice"], 1, "'Voice'"),  # sent unchanged: the API's values are lower case
        (["chat", "sms"], 1, "'sms'"),
        ([""], 0, "''"),
    ],
)
def test_a_media_type_genesys_does_not_know_is_a_config_error_naming_the_allowed_values(
    media_types: list[str], index: int, shown: str
) -> None:
    source = {"name": "g", "provider": "genesys", "region": "mypurecloud.ie", "client_id": "i", "client_secret": "s"}
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps({"sources": [{**source, "media_types": media_types}]}), "test.yaml", {})
    assert str(caught.value) == (
        f"test.yaml: sources[0].media_types[{index}]: {shown} is not a Genesys media type (use {ALLOWED})"
    )


def test_every_genesys_media_type_is_accepted_and_sent_unchanged_as_a_filter() -> None:
    assert ", ".join(MEDIA_TYPES) == ALLOWED
    config = genesys_config(media_types=list(MEDIA_TYPES))
    body = query_body(NINE, NINE + 1800, config)
    assert body["filter"] == {
        "type": "or",
        "predicates": [
            {"type": "dimension", "dimension": "mediaType", "operator": "matches", "value": m} for m in MEDIA_TYPES
        ],
    }
