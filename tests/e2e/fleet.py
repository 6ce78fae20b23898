"""Every provider's simulator (the --demo set), and what each provider's parser says about schema faults."""

from __future__ import annotations

from aht_exporter.clock import Clock
from aht_exporter.demo import DEMO_PROVIDERS, Demo
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
        Fault.MISSING_FIELD: "intervalStartTimeStamp is missing",  # a counter left out is zero (issue 13)
        Fault.WRONG_TYPE: "conversationHandleTime is not a non-negative number",
        Fault.ERROR_IN_200: "answered 200 with an error",
        Fault.DEEP_JSON: "nested too deeply",
        Fault.HUGE_NUMBER: "conversationHandleTime: 1.7e+308 is above the limit of 1e+15 ms",
        Fault.NEGATIVE_NUMBER: "conversationHandleTime is not a non-negative number: -5",
    },
    "liveperson": {
        Fault.MISSING_FIELD: "totalHandlingTime is missing",
        Fault.WRONG_TYPE: "totalInteractiveChats is missing or not a non-negative number",
        Fault.ERROR_IN_200: "answered 200 with an error: Engagement Activity is temporarily unavailable",
        Fault.DEEP_JSON: "nested too deeply",
        Fault.HUGE_NUMBER: "totalInteractiveChats: 1.7e+308 is above the limit of 1e+12 contacts",
        Fault.NEGATIVE_NUMBER: "totalInteractiveChats is missing or not a non-negative number",
    },
    "ozonetel": {
        Fault.MISSING_FIELD: "message.AHT is missing",
        Fault.WRONG_TYPE: "`message` is not an object with AHT",
        Fault.ERROR_IN_200: "Service temporarily unavailable",
        Fault.DEEP_JSON: "nested too deeply",
        # Ozonetel's numeric field is the `message` object itself (its AHT is text): a number in its place.
        Fault.HUGE_NUMBER: "`message` is not an object with AHT",
        Fault.NEGATIVE_NUMBER: "`message` is not an object with AHT",
    },
}
PROVIDERS = list(DEMO_PROVIDERS)


async def start_fleet(clock: Clock) -> Demo:
    demo = Demo(clock)
    await demo.start()
    return demo
