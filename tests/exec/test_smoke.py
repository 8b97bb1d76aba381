from sapphire_domain.messages import FILLS_STREAM
from tests.exec.conftest import ExecHarness, make_target


def test_a_target_becomes_fills_and_sigterm_exits_cleanly(harness: ExecHarness):
    process = harness.start()
    harness.publish(make_target(1, {"BTC/USD": 0.2, "ETH/USD": -0.1}))
    harness.wait_for(lambda: len(harness.stream(FILLS_STREAM)) == 2, what="two fills")
    harness.wait_for(harness.drained, what="ack")
    assert harness.stop(process) == 0
