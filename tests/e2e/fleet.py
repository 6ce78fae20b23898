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
    },
    "koreai": {
        Fault.MISSING_FIELD: "conversationHandleTime is missing",
        Fault.WRONG_TYPE: "conversationHandleTime is not a non-negative number",
        Fault.ERROR_IN_200: "answered 200 with an error",
    },
    "liveperson": {
        Fault.MISSING_FIELD: "totalHandlingTime is missing",
        Fault.WRONG_TYPE: "totalInteractiveChats is missing or not a non-negative number",
        Fault.ERROR_IN_200: "answered 200 with an error: Engagement Activity is temporarily unavailable",
    },
    "ozonetel": {
        Fault.MISSING_FIELD: "message.AHT is missing",
        Fault.WRONG_TYPE: "`message` is not an object with AHT",
        Fault.ERROR_IN_200: "Service temporarily unavailable",
    },
}
PROVIDERS = list(DEMO_PROVIDERS)


async def start_fleet(clock: Clock) -> Demo:
    demo = Demo(clock)
    await demo.start()
    return demo
