"""What the pipeline costs a month, from counts measured on local runs and dated public prices: docs/cost.md.

    python -m benchmarks.cost            # print the page
    python -m benchmarks.cost --write    # regenerate docs/cost.md

The counts per kind of run (RUN_KINDS) are what tests/test_cost_counts.py measures from local executions'
histories (states entered, Lambda tasks scheduled) and their AWS requests; the resources (metric series, alarms,
dashboards, secrets, memory sizes) are counted from the synthesized template and the code that publishes the
metrics. That test fails when a figure here no longer matches the code, and when docs/cost.md no longer matches
what this module renders, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "cost.md"
PRICES_DATE, REGION = "2026-12-01", "eu-west-2 (Europe, London)"
RUNS_PER_MONTH = 12 * 24 * 30  # the schedule's rate(5 minutes), a 30-day month
RECONCILIATIONS_PER_MONTH = 30  # cron(30 2 * * ? *)
GB = 1e9


@dataclass(frozen=True)
class Price:
    usd: float
    per: str
    source: str  # where the figure is from, and whether it was checked on PRICES_DATE


CHECKED = f"aws.amazon.com pricing page, checked {PRICES_DATE}"
LISTED = f"AWS list price for {REGION.split(' ')[0]}, as published; not re-checked on {PRICES_DATE}"
PRICES: dict[str, Price] = {
    "transition": Price(0.025 / 1000, "state transition (Standard)", f"Step Functions, Europe (London): {CHECKED}"),
    "lambda_request": Price(0.20 / 1e6, "Lambda request", f"Lambda: {LISTED}"),
    "lambda_gb_s": Price(0.0000166667, "GB-second (x86_64)", f"Lambda: {LISTED}"),
    "s3_put": Price(0.0053 / 1000, "S3 PUT/LIST/DELETE request", f"S3 Standard: {LISTED}"),
    "s3_get": Price(0.00042 / 1000, "S3 GET request", f"S3 Standard: {LISTED}"),
    "secret": Price(0.40, "secret-month", f"Secrets Manager: {LISTED}"),
    "secret_call": Price(0.05 / 10_000, "GetSecretValue call", f"Secrets Manager: {LISTED}"),
    "metric": Price(0.30, "custom metric series-month (prorated by the hour it is published)", f"CloudWatch: {LISTED}"),
    "alarm": Price(0.10, "standard alarm-month", f"CloudWatch: {LISTED}"),
    "dashboard": Price(3.00, "dashboard-month", f"CloudWatch: {LISTED}"),
    "log_gb": Price(0.5985, "GB of logs ingested", f"CloudWatch Logs: {LISTED}"),
}
# Always-free allowances per account and month (shared with whatever else the account runs).
FREE = {"transition": 4000, "lambda_request": 1_000_000, "lambda_gb_s": 400_000, "metric": 10, "alarm": 10,
        "dashboard": 3, "log_gb": 5.0}  # fmt: skip


@dataclass(frozen=True)
class RunKind:
    """What one execution of this kind does, as measured by tests/test_cost_counts.py on a local run."""

    title: str
    states: int  # states entered: each one a billed transition
    invocations: dict[str, int]  # Lambda tasks scheduled, per function
    s3_get: int  # s3:GetObject requests
    s3_put: int  # s3:PutObject and s3:DeleteObject requests (priced alike)
    log_bytes: int  # the Lambdas' log lines (Powertools JSON, EMF metrics included) plus the execution's history
    gb_seconds: float  # Σ memory × local wall seconds of the invocations (cold starts: COLD_SHARE, INIT_SECONDS)

    @property
    def calls(self) -> int:
        return sum(self.invocations.values())


# Measured on 2026-12-01 with tests/test_cost_counts.py (scale 0.05 sample data, this repository's stack).
RUN_KINDS: dict[str, RunKind] = {
    "quiet": RunKind(
        "nothing changed", 8, {"totesys-extract": 1, "totesys-lease": 1, "totesys-report": 1}, 85, 2, 38993, 0.2
    ),
    "seed": RunKind(
        "the 4 transaction tables changed",
        33,
        {"totesys-extract": 5, "totesys-lease": 1, "totesys-load": 5, "totesys-report": 1, "totesys-transform": 5},
        121,
        34,
        171717,
        2.2,
    ),
    "busy": RunKind(
        "every table changed, or its forced scan is due",
        66,
        {"totesys-extract": 12, "totesys-lease": 1, "totesys-load": 11, "totesys-report": 1, "totesys-transform": 11},
        172,
        80,
        373826,
        6.5,
    ),
    "reconcile": RunKind(
        "nightly reconciliation, nothing drifted",
        66,
        {"totesys-extract": 12, "totesys-lease": 1, "totesys-load": 11, "totesys-report": 1, "totesys-transform": 11},
        241,
        46,
        462739,
        4.8,
    ),
}
# Each function's memory in GB, as the synthesized template sets it (the test checks it).
MEMORY_GB = {"totesys-extract": 1.0, "totesys-transform": 2.0, "totesys-load": 1.0, "totesys-report": 0.25,
             "totesys-lease": 0.25}  # fmt: skip
# Cold starts are billed (the INIT phase, since August 2025) and are not measured locally. Assumed: a cold
# INIT takes INIT_SECONDS, and one invocation in 1 / COLD_SHARE is cold (the environments a run uses are
# reused by the next one, 5 minutes later, most of the time). Every invocation cold adds COLD_SHARE⁻¹ times that.
INIT_SECONDS, COLD_SHARE = 1.0, 0.1


@dataclass(frozen=True)
class Resources:
    """What the stack keeps whatever the runs do, counted from the template and the publishing code."""

    run_series: int  # custom metric series the report publishes in every run (how far each fact is behind)
    metric_series: int  # custom metric series published in every hour in which a fact is loaded
    reconcile_series: int  # series published only by the nightly reconciliation (one hour a day)
    alarms: int
    dashboards: int
    secrets: int


RESOURCES = Resources(run_series=1, metric_series=0, reconcile_series=2, alarms=8, dashboards=0, secrets=2)


@dataclass(frozen=True)
class Volume:
    """How many runs of each kind a 30-day month has at one volume."""

    title: str
    runs: dict[str, int] = field(default_factory=dict)
    hours_with_work: float = 1.0  # the share of hours in which some table has work (metric series are prorated)


VOLUMES: dict[str, Volume] = {
    "floor": Volume(
        "no change at all (every run quiet)",
        {"quiet": RUNS_PER_MONTH, "reconcile": RECONCILIATIONS_PER_MONTH},
        hours_with_work=1 / 24,  # the reconciliation's hour
    ),
    # A few hundred changes an hour land in the transaction tables every 5 minutes; the 7 reference tables
    # change rarely, so their forced scan (EXTRACT_SIGNAL_MAX_AGE_SECONDS, an hour) makes one run an hour busy.
    "seed": Volume(
        "production (seed) volume",
        {"seed": RUNS_PER_MONTH * 11 // 12, "busy": RUNS_PER_MONTH // 12, "reconcile": RECONCILIATIONS_PER_MONTH},
    ),
    "100x": Volume(
        "100 × volume (every table changes in every run)",
        {"busy": RUNS_PER_MONTH, "reconcile": RECONCILIATIONS_PER_MONTH},
    ),
}


def bill(volume: Volume, *, free_tier: bool = False) -> dict[str, float]:
    """Dollars a month per line; ``free_tier`` takes the always-free allowances off (an account running nothing
    else)."""
    runs = [(RUN_KINDS[kind], n) for kind, n in volume.runs.items()]
    usage = {
        "transition": sum(k.states * n for k, n in runs),
        "lambda_request": sum(k.calls * n for k, n in runs),
        "lambda_gb_s": sum(k.gb_seconds * n for k, n in runs),
        "lambda_init": sum(cold_gb_seconds(k) * n for k, n in runs),
        "s3_put": sum(k.s3_put * n for k, n in runs),
        "s3_get": sum(k.s3_get * n for k, n in runs),
        "log_gb": sum(k.log_bytes * n for k, n in runs) / GB,
        # upper bound: one secret read per invocation that connects to a database (a warm container caches it)
        "secret_call": sum(
            (k.invocations.get("totesys-extract", 0) + k.invocations.get("totesys-load", 0)) * n for k, n in runs
        ),
        "metric": RESOURCES.run_series
        + RESOURCES.metric_series * volume.hours_with_work
        + RESOURCES.reconcile_series / 24,
        "alarm": RESOURCES.alarms,
        "dashboard": RESOURCES.dashboards,
        "secret": RESOURCES.secrets,
    }
    if free_tier:  # Lambda's free GB-seconds cover its duration and cold starts together
        usage["lambda_gb_s"] += usage.pop("lambda_init")
        usage = {line: max(0.0, used - FREE.get(line, 0)) for line, used in usage.items()}
    return {line: used * PRICES["lambda_gb_s" if line == "lambda_init" else line].usd for line, used in usage.items()}


def cold_gb_seconds(kind: RunKind) -> float:
    """The GB-seconds of the cold starts one run of this kind is assumed to have (COLD_SHARE, INIT_SECONDS)."""
    return sum(MEMORY_GB[function] * n for function, n in kind.invocations.items()) * INIT_SECONDS * COLD_SHARE


LINE_NAMES = {
    "transition": "Step Functions transitions",
    "lambda_request": "Lambda requests",
    "lambda_gb_s": "Lambda duration (GB-s, measured)",
    "lambda_init": f"Lambda cold starts ({COLD_SHARE:.0%} of invocations, {INIT_SECONDS:g} s each)",
    "s3_put": "S3 PUT requests",
    "s3_get": "S3 GET requests",
    "log_gb": "CloudWatch Logs ingestion",
    "secret_call": "Secrets Manager calls",
    "metric": "CloudWatch custom metrics",
    "alarm": "CloudWatch alarms",
    "dashboard": "CloudWatch dashboard",
    "secret": "Secrets Manager secrets",
}


TARGET_USD = 10.0
WHAT_WOULD_CHANGE_IT = """\
Where it goes and what would change it:

- **Transitions** ({transitions}): a run enters {quiet_states} states when nothing changed and {seed_states} when the
  four transaction tables did (each table with work adds its extract, transform and load iterations: 3, 1 and 1
  states, plus the dimensions and dates built from it). The bill follows the runs with work, not the schedule. What
  would cut it: running the per-table work as an Express child workflow (billed per request, $1 a million, and
  per GB-second of its memory, not per transition), at the price of Express's 5-minute limit (a full load or a
  partitioned read needs a Standard run), of execution graphs kept only in CloudWatch Logs, and of no redrive for
  the child; or a schedule every 15 minutes (a third of every per-run line); or an extract iteration of one state
  for an incremental read (the partitioned path as a Map of its own), about 7 states less per run at production
  volume.
- **Fixed lines** ({fixed}: metric series, alarms, the dashboard, the two secrets) are paid whatever the runs do.
  Metric series are billed by the hour they are published: the freshness series every hour (every run's report
  publishes them, the alarm's evidence), the others only in hours with a fact load; rows loaded and held per
  table are Logs Insights queries over the load's log lines rather than series. The dashboard is free
  as one of an account's first three; ten alarms are free.
- **S3 PUTs** follow the batches: per table with work, the Parquet part, its manifest and the head of each stage.
- **Lambda** is small: the work of a run at this volume is under two GB-seconds; the always-free 400,000 GB-seconds
  and million requests cover it whole."""

ASSUMPTIONS = """\
Assumptions: production (seed) volume is a few hundred changes an hour, landing in `sales_order`,
`purchase_order`, `payment` and `transaction` in every run, while the seven reference tables change rarely: each
is then scanned once an hour (`EXTRACT_SIGNAL_MAX_AGE_SECONDS`), counted as one busy run an hour. At 100 × volume
every table changes in every run. Per-run figures were measured with one changed row per table: the counts of
states, invocations and requests do not depend on the number of rows until a table is read in key ranges
(`EXTRACT_PARTITION_ROWS`), but the GB-seconds grow with them (at 100 × volume, about 2,500 changed rows a run: see
the benchmark's incremental figures in the README). Not counted: the network the databases live in (a VPC's NAT
gateway or interface endpoints cost more than all of this), the databases themselves, S3 storage (the lake grows
by the changes: megabytes a month at this volume), X-Ray (the 100,000 free traces a month cover one per run),
SNS e-mails and data transfer."""


def _money(usd: float) -> str:
    return f"${usd:,.2f}"


def render() -> str:
    """docs/cost.md, from the figures above."""
    bills = {name: bill(volume) for name, volume in VOLUMES.items()}
    free = {name: bill(volume, free_tier=True) for name, volume in VOLUMES.items()}
    lines = [
        "# What it costs",
        "",
        "Generated by `python -m benchmarks.cost --write` from the counts measured on local runs and the prices below;",
        "`tests/test_cost_counts.py` measures the counts again and fails when this page no longer matches the code.",
        "Do not edit by hand.",
        "",
        f"Prices: {REGION}, as of {PRICES_DATE}, in US dollars, without tax. A month is 30 days: "
        f"{RUNS_PER_MONTH:,} scheduled runs (every 5 minutes) and {RECONCILIATIONS_PER_MONTH} reconciliations.",
        "",
        "## Per run, measured",
        "",
        "| kind of run | states (transitions) | Lambda invocations | S3 GET | S3 PUT | log bytes | GB-s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in RUN_KINDS.values():
        calls = ", ".join(f"{n} {name.removeprefix('totesys-')}" for name, n in kind.invocations.items())
        lines.append(f"| {kind.title} | {kind.states} | {kind.calls} ({calls}) | {kind.s3_get} | {kind.s3_put} | "
                     f"{kind.log_bytes:,} | {kind.gb_seconds:.1f} |")  # fmt: skip
    lines += [
        "",
        "GB-s: each invocation's local wall time (in-process, this machine) times its function's memory in the "
        "synthesized template; cold starts are priced on a line of their own. Log bytes: the Lambdas' log lines of "
        "the run plus its execution history (the execution log records every event with its data, `LogLevel.ALL`).",
        "",
        "## Fixed, counted from the template and the code",
        "",
        f"- {RESOURCES.run_series} custom metric series published by every run's report, "
        f"{RESOURCES.metric_series} published whenever a fact is loaded, and "
        f"{RESOURCES.reconcile_series} published only by the nightly reconciliation (billed for one hour a day);",
        f"- {RESOURCES.alarms} alarms, {RESOURCES.dashboards} dashboard, {RESOURCES.secrets} secrets.",
        "",
        "## The bill a month",
        "",
        "| line | " + " | ".join(VOLUMES[name].title for name in VOLUMES) + " |",
        "|---|" + "---:|" * len(VOLUMES),
    ]
    for line, label in LINE_NAMES.items():
        lines.append(f"| {label} | " + " | ".join(_money(bills[name][line]) for name in VOLUMES) + " |")
    lines.append("| **total** | " + " | ".join(f"**{_money(sum(bills[n].values()))}**" for n in VOLUMES) + " |")
    lines.append("| total after the always-free tiers | " + " | ".join(_money(sum(free[n].values())) for n in VOLUMES)
                 + " |")  # fmt: skip
    seed = bills["seed"]
    top = max(seed, key=seed.__getitem__)
    lines += [
        "",
        f"At production volume the largest line is **{LINE_NAMES[top]}** ({_money(seed[top])} of "
        f"{_money(sum(seed.values()))}), and the target of $10 a month is "
        + (
            "met."
            if sum(seed.values()) <= TARGET_USD
            else f"**missed by {_money(sum(seed.values()) - TARGET_USD)}** at list prices "
            f"({_money(sum(free['seed'].values()))} after the always-free tiers, in an account running nothing else)."
        )
        + " "
        + WHAT_WOULD_CHANGE_IT.format(
            seed_states=RUN_KINDS["seed"].states,
            quiet_states=RUN_KINDS["quiet"].states,
            transitions=_money(seed["transition"]),
            fixed=_money(sum(seed[k] for k in ("metric", "alarm", "dashboard", "secret"))),
        ),
        "",
        ASSUMPTIONS,
        "",
        "## Prices",
        "",
        "| what | price | source |",
        "|---|---:|---|",
    ]
    for price in PRICES.values():
        lines.append(f"| {price.per} | ${price.usd:.10f}".rstrip("0").rstrip(".") + f" | {price.source} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH.name} instead of printing it")
    args = parser.parse_args(argv)
    if args.write:
        DOC_PATH.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
