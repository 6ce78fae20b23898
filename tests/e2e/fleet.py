"""Every provider's simulator (the --demo set), and what each provider's parser says about schema faults."""

from __future__ import annotations

from aht_exporter.clock import Clock
from aht_exporter.simulator.demo import DEMO_PROVIDERS, Demo
from aht_exporter.simulator.faults import Fault

# The words each provider uses for a schema fault or a vendor error in a 200, in its last error.
SCHEMA_ERRORS: dict[str, dict[Fault, str]] = {
    "genesys": {
        Fault.MISSING_FIELD: "stats.count is missing",
        Fault.WRONG_TYPE: "Expected `float`, got `str`",
        Fault.ERROR_IN_200: "answered 200 with an error: service.unavailable",
        Fault.DEEP_JSON: "Expected `object`, got `array`",
        Fault.HUGE_NUMBER: "stats.sum: 1.7e+308 is above the limit of 1e+15 ms",
        Fault.NEGATIVE_NUMBER: "stats.sum: -5 is negative",
    },
    "koreai": {
        # A counter left out is zero (issue 13): the interval is what a record must have. Records may leave out
        # their zero handle time, so which record's handle time is named first varies.
        Fault.MISSING_FIELD: "Object missing required field `intervalStartTimeStamp` - at `$.CallVolumeUpdate[0]`",
        Fault.WRONG_TYPE: "Expected `int | float`, got `str` - at `$.CallVolumeUpdate[",
        Fault.ERROR_IN_200: "answered 200 with an error",
        Fault.DEEP_JSON: "Expected `object`, got `array`",
        Fault.HUGE_NUMBER: "1.7e+308 is above the limit of 1e+15 ms - at `$.CallVolumeUpdate[",
        Fault.NEGATIVE_NUMBER: "-5 is negative - at `$.CallVolumeUpdate[",
    },
    "liveperson": {
        Fault.MISSING_FIELD: "Object missing required field `totalHandlingTime` - at `$.metricsByIntervals[",
        Fault.WRONG_TYPE: "Expected `int | float`, got `str` - at `$.metricsByIntervals[",
        Fault.ERROR_IN_200: "answered 200 with an error: Engagement Activity is temporarily unavailable",
        Fault.DEEP_JSON: "Expected `object`, got `array` - at `$`",
        Fault.HUGE_NUMBER: "totalInteractiveChats: 1.7e+308 is above the limit of 1e+12 contacts",
        Fault.NEGATIVE_NUMBER: "totalInteractiveChats: -5 is negative",
    },
    "ozonetel": {
        Fault.MISSING_FIELD: "Object missing required field `AHT` - at `$.message`",
        # The `message` object turned into its Python text: no JSON, so no object with AHT.
        Fault.WRONG_TYPE: "Expected an object with `AHT`, got a string - at `$.message`",
        Fault.ERROR_IN_200: "Service temporarily unavailable",
        Fault.DEEP_JSON: "nested too deeply",
        # Ozonetel's numeric field is the `message` object itself (its AHT is text): a number in its place.
        Fault.HUGE_NUMBER: "got `float` - at `$.message`",
        Fault.NEGATIVE_NUMBER: "got `int` - at `$.message`",
    },
    "amazon_connect": {
        Fault.MISSING_FIELD: "MetricResults[0].MetricInterval is missing",
        Fault.WRONG_TYPE: "Expected `float | null`, got `str` - at `$.MetricResults[0].Collections[0].Value`",
        Fault.ERROR_IN_200: "answered 200 with an error: ?: Internal server error",
        Fault.DEEP_JSON: "Expected `object`, got `array`",
        Fault.HUGE_NUMBER: "MetricResults[0].Collections[0].Value: 1.7e+308 is above the limit of 1e+12 s",
        Fault.NEGATIVE_NUMBER: "MetricResults[0].Collections[0].Value: -5 is negative",
    },
}
PROVIDERS = list(DEMO_PROVIDERS)


async def start_fleet(clock: Clock) -> Demo:
    demo = Demo(clock)
    await demo.start()
    return demo
