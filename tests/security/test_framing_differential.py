"""HTTP/1.1 framing, differential: Wardgate is never looser than both nginx and HAProxy, and
its upstream never sees a request the client did not send as one.

The corpus (`support.framing_corpus`) goes to all three, each in front of its own recording
upstream; `support.framing` compares the outcomes. The per-case table of the run is written
to `tests/.results/framing-differential.md`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.support import results
from tests.support.framing import (
    Outcome,
    Peer,
    RecordingUpstream,
    boundary_mismatches,
    compare,
    run_cases,
    start_haproxy,
    start_nginx,
)
from tests.support.framing_corpus import CORPUS
from tests.support.gateway import StartGateway, seed_document

SUITE = "HTTP/1.1 framing differential"
# Cases run concurrently: the quiet wait is paid once, and leaves room for a loaded machine.
QUIET_SECONDS = 3.0
REPORT = results.RESULTS_FILE.parent / "framing-differential.md"


@pytest.fixture
async def recorders() -> AsyncIterator[dict[str, RecordingUpstream]]:
    started = {name: await RecordingUpstream().start() for name in ("wardgate", "nginx", "haproxy")}
    yield started
    for recorder in started.values():
        await recorder.stop()


@pytest.fixture
async def peers(recorders: dict[str, RecordingUpstream]) -> AsyncIterator[dict[str, Peer]]:
    started: dict[str, Peer] = {}
    try:
        started["nginx"] = await start_nginx(recorders["nginx"].port)
        started["haproxy"] = await start_haproxy(recorders["haproxy"].port)
        yield started
    finally:
        for peer in started.values():
            await peer.stop()


async def test_framing_is_never_looser_than_nginx_and_haproxy(
    recorders: dict[str, RecordingUpstream],
    peers: dict[str, Peer],
    gateway_factory: StartGateway,
) -> None:
    upstream_url = f"http://127.0.0.1:{recorders['wardgate'].port}"
    gateway = await gateway_factory(seed_document(upstream_url))
    cases = {f"c{index}": case for index, case in enumerate(CORPUS)}
    ports = {
        "wardgate": gateway.port,
        "nginx": peers["nginx"].port,
        "haproxy": peers["haproxy"].port,
    }
    runs = await asyncio.gather(
        *(
            run_cases(ports[name], recorders[name], cases.items(), quiet=QUIET_SECONDS)
            for name in ports
        )
    )
    outcomes: dict[str, dict[str, Outcome]] = dict(zip(ports, runs, strict=True))
    counts: Counter[str] = Counter()
    failures: list[str] = []
    rows: list[str] = []
    for case_id, case in cases.items():
        ours = outcomes["wardgate"][case_id]
        versus = {peer: compare(ours, outcomes[peer][case_id]) for peer in ("nginx", "haproxy")}
        verdicts = set(versus.values())
        if verdicts == {"looser"}:
            verdict = "looser"
        elif "agree" in verdicts:
            verdict = "agree"
        elif "stricter" in verdicts:
            verdict = "stricter"
        else:
            verdict = "looser than one, different from the other"
        counts[verdict] += 1
        peers_agree = compare(outcomes["nginx"][case_id], outcomes["haproxy"][case_id]) == "agree"
        if not peers_agree:
            counts["peers disagree"] += 1
        mismatches = boundary_mismatches(case, ours)
        if mismatches:
            counts["boundary mismatches"] += 1
        if verdict.startswith("looser") or mismatches:
            failures.append(
                f"[{case.family}] {case.name}: {verdict} {mismatches}\n"
                + "".join(f"    {name}: {outcomes[name][case_id].describe()}\n" for name in ports)
            )
        rows.append(
            f"| {case.family} | {case.name} | {verdict} | "
            + " | ".join(
                _cell(outcomes[name][case_id]) for name in ("wardgate", "nginx", "haproxy")
            )
            + " |"
        )
    ours = recorders["wardgate"]
    if ours.unattributed or ours.parse_errors:
        failures.append(
            f"Wardgate's upstream saw {ours.unattributed} and could not parse {ours.parse_errors}"
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(
        "| family | case | Wardgate | Wardgate outcome | nginx | HAProxy |\n"
        "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )
    assert failures == [], "\n".join(failures)
    assert counts["agree"] + counts["stricter"] == len(cases)
    for figure in ("agree", "stricter", "looser", "boundary mismatches", "peers disagree"):
        results.record(SUITE, figure, counts[figure])
    results.note(SUITE, cases=len(cases))


def _cell(outcome: Outcome) -> str:
    forwarded = ",".join(f.label for f in outcome.forwarded) or "-"
    statuses = ",".join(str(s) for s in outcome.statuses) or "-"
    return f"{statuses} {'open' if outcome.open else 'closed'} up:{forwarded}"
