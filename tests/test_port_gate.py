"""The gate is an M/M/c queue when arrivals are Poisson and service exponential: the simulated mean
wait and mean queue length match Erlang C within a batch-means confidence interval."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Generator

import pytest
import simpy

from simulator.port.gate import Gate, Lane
from simulator.randomness import stream

# Two-sided 99% Student t quantile for 19 degrees of freedom (20 batches).
T_99_19 = 2.861
BATCHES = 20


def erlang_c(lanes: int, arrival_rate: float, service_rate: float) -> tuple[float, float]:
    """(mean wait Wq, mean queue length Lq) of an M/M/c queue."""
    a = arrival_rate / service_rate
    rho = a / lanes
    top = a**lanes / math.factorial(lanes) / (1.0 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(lanes)) + top)
    wq = p_wait / (lanes * service_rate - arrival_rate)
    return wq, arrival_rate * wq


def poisson_trucks(env: simpy.Environment, gate: Gate, rate: float, rng: random.Random) -> Generator[simpy.Event, None, None]:
    while True:
        yield env.timeout(rng.expovariate(rate))
        env.process(gate.pass_through())


def confidence_interval(batch_means: list[float]) -> tuple[float, float]:
    centre = statistics.fmean(batch_means)
    half = T_99_19 * statistics.stdev(batch_means) / math.sqrt(len(batch_means))
    return centre - half, centre + half


@pytest.mark.parametrize(("lanes", "utilisation"), [(1, 0.7), (3, 0.85)])
def test_gate_wait_and_queue_match_erlang_c(lanes: int, utilisation: float) -> None:
    mean_service = 100.0  # s, the default OCR/RFID check
    service_rate = 1.0 / mean_service
    arrival_rate = utilisation * lanes * service_rate
    env = simpy.Environment()
    gate = Gate(env, "in", [Lane(f"G{n}", "in") for n in range(lanes)], mean_service, 1.0, stream(11, f"gate-{lanes}"))
    env.process(poisson_trucks(env, gate, arrival_rate, stream(12, f"trucks-{lanes}")))

    # ~10,000 trucks a batch after a warm-up of one batch; batches this long are nearly independent
    # (the queue's relaxation time is a few hundred services at these loads).
    batch = 10_000 / arrival_rate
    env.run(until=batch)
    waits_before, area_before = len(gate.waits), gate.queue_area_at(env.now)
    wait_means, queue_means = [], []
    for _ in range(BATCHES):
        env.run(until=env.now + batch)
        wait_means.append(statistics.fmean(gate.waits[waits_before:]))
        area = gate.queue_area_at(env.now)
        queue_means.append((area - area_before) / batch)
        waits_before, area_before = len(gate.waits), area

    wq, lq = erlang_c(lanes, arrival_rate, service_rate)
    low, high = confidence_interval(wait_means)
    assert low <= wq <= high, f"Erlang C Wq {wq:.1f} s outside the 99% CI [{low:.1f}, {high:.1f}]"
    assert high - low < 0.25 * wq  # the interval is tight enough to mean something
    low, high = confidence_interval(queue_means)
    assert low <= lq <= high, f"Erlang C Lq {lq:.3f} outside the 99% CI [{low:.3f}, {high:.3f}]"


def test_every_truck_gets_a_lane_in_arrival_order() -> None:
    env = simpy.Environment()
    gate = Gate(env, "out", [Lane("G3", "out"), Lane("G4", "out")], 100.0, 0.4, stream(1, "fifo"))
    finished: list[int] = []

    def truck(n: int) -> Generator[simpy.Event, None, None]:
        yield env.timeout(n)  # trucks 1 s apart: a queue builds up
        yield from gate.pass_through()
        finished.append(n)

    for n in range(50):
        env.process(truck(n))
    env.run()
    assert sorted(finished) == list(range(50))
    assert sum(lane.served for lane in gate.lanes) == 50
    # First come, first served: truck n never waits less than truck n-1 minus the 1 s between them.
    assert all(b >= a - 1.0 - 1e-9 for a, b in zip(gate.waits, gate.waits[1:]))
    assert gate.waiting == 0
