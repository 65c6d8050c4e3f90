"""What the pipeline costs a month, from counts measured on local runs and dated public prices: docs/cost.md.

    python -m benchmarks.cost            # print the page
    python -m benchmarks.cost --write    # regenerate docs/cost.md

The counts per kind of run (RUN_KINDS) are what tests/test_cost_counts.py measures from local executions'
histories (states entered by the Standard parent and by its child, Express executions and their duration, Lambda
tasks scheduled) and their AWS requests; the resources (metric series, alarms,
dashboards, secrets, memory sizes) are counted from the synthesized template and the code that publishes the
metrics. That test fails when a figure here no longer matches the code, and when docs/cost.md no longer matches
what this module renders, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lambdas.common.credentials import SECRET_MAX_AGE_SECONDS

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "cost.md"
PRICES_DATE, REGION = "2026-12-01", "eu-west-2 (Europe, London)"
RUNS_PER_MONTH = 12 * 24 * 30  # the schedule's rate(5 minutes), a 30-day month
RECONCILIATIONS_PER_MONTH = 30  # cron(30 2 * * ? *)
GB = 1e9
# An Express execution is billed in 64 MB steps of the memory its definition, Map states and payloads take; the
# child's definition is 20 kB and its payloads (table names, counts, keys) a few kB: one step.
EXPRESS_MEMORY_GB = 64 / 1024


@dataclass(frozen=True)
class Price:
    usd: float
    per: str
    source: str  # where the figure is from, and whether it was checked on PRICES_DATE


CHECKED = f"aws.amazon.com pricing page, checked {PRICES_DATE}"
LISTED = f"AWS list price for {REGION.split(' ')[0]}, as published; not re-checked on {PRICES_DATE}"
EXPRESS = (
    f"aws.amazon.com pricing page and AWS's Step Functions workshop (64 MB for 100 ms: $0.0000001042), read "
    f"{PRICES_DATE}; the London row of the duration table could not be read here: the US East price"
)
PRICES: dict[str, Price] = {
    "transition": Price(0.025 / 1000, "state transition (Standard)", f"Step Functions, Europe (London): {CHECKED}"),
    "express_request": Price(1.00 / 1e6, "Express execution (request)", f"Step Functions Express: {EXPRESS}"),
    "express_gb_s": Price(
        0.00001667,
        "Express GB-second (first 1,000 GB-hours a month; 64 MB steps, 100 ms steps)",
        f"Step Functions Express: {EXPRESS}",
    ),
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
    states: int  # states the Standard parent entered: each one a billed transition
    invocations: dict[str, int]  # Lambda tasks scheduled, per function
    s3_get: int  # s3:GetObject requests
    s3_put: int  # s3:PutObject and s3:DeleteObject requests (priced alike)
    log_bytes: int  # the Lambdas' log lines (Powertools JSON, EMF metrics included) plus the logged history
    gb_seconds: float  # Σ memory × local wall seconds of the invocations (cold starts: COLD_SHARE, INIT_SECONDS)
    child: str = ""  # the child that ran the tables' work: "EXPRESS", "STANDARD" or "" (none)
    child_states: int = 0  # states the child entered: billed transitions when it is a Standard one
    express_seconds: float = 0.0  # the Express child's duration (local wall time), billed in 100 ms steps

    @property
    def calls(self) -> int:
        return sum(self.invocations.values())

    @property
    def transitions(self) -> int:
        """What Standard bills: the parent's states, and the child's when the child is a Standard one."""
        return self.states + (self.child_states if self.child == "STANDARD" else 0)

    @property
    def express_gb_seconds(self) -> float:
        """The Express child's billed duration: rounded up to 100 ms, times its 64 MB (EXPRESS_MEMORY_GB)."""
        return math.ceil(self.express_seconds * 10) / 10 * EXPRESS_MEMORY_GB if self.child == "EXPRESS" else 0.0


# Measured on 2026-12-01 with tests/test_cost_counts.py (scale 0.05 sample data, this repository's stack).
_PARENT = {"totesys-extract": 1, "totesys-lease": 1, "totesys-report": 1}
_EVERY_TABLE = {"totesys-extract": 12, "totesys-lease": 1, "totesys-load": 11, "totesys-report": 1,
                "totesys-transform": 11}  # fmt: skip
RUN_KINDS: dict[str, RunKind] = {
    "quiet": RunKind("nothing changed", 7, _PARENT, 85, 2, 2470, 0.2),
    "seed": RunKind(
        "the 4 transaction tables changed",
        8,
        {"totesys-extract": 5, "totesys-lease": 1, "totesys-load": 5, "totesys-report": 1, "totesys-transform": 5},
        125,
        34,
        12378,
        2.0,
        "EXPRESS",
        26,
        0.5,
    ),
    "busy": RunKind(
        "every table changed, or its forced scan is due", 8, _EVERY_TABLE, 183, 80, 25039, 5.0, "EXPRESS", 59, 1.5
    ),
    "reconcile": RunKind(
        "nightly reconciliation, nothing drifted", 8, _EVERY_TABLE, 241, 46, 24828, 4.8, "STANDARD", 59
    ),
}
# Each function's memory in GB, as the synthesized template sets it (the test checks it).
MEMORY_GB = {"totesys-extract": 1.0, "totesys-transform": 2.0, "totesys-load": 1.0, "totesys-report": 0.25,
             "totesys-lease": 0.25}  # fmt: skip
# Cold starts are billed (the INIT phase, since August 2025) and are not measured locally. Assumed: a cold
# INIT takes INIT_SECONDS, and one invocation in 1 / COLD_SHARE is cold (the environments a run uses are
# reused by the next one, 5 minutes later, most of the time). Every invocation cold adds COLD_SHARE⁻¹ times that.
INIT_SECONDS, COLD_SHARE = 1.0, 0.1
# Warm containers that connect to a database (the extract Map's 4 concurrent plus the load Maps' 4), each reading
# its secret again when its copy is SECRET_MAX_AGE_SECONDS old.
SECRET_CONTAINERS = 8


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
        "transition": sum(k.transitions * n for k, n in runs),
        "express_request": sum((k.child == "EXPRESS") * n for k, n in runs),
        "express_gb_s": sum(k.express_gb_seconds * n for k, n in runs),
        "lambda_request": sum(k.calls * n for k, n in runs),
        "lambda_gb_s": sum(k.gb_seconds * n for k, n in runs),
        "lambda_init": sum(cold_gb_seconds(k) * n for k, n in runs),
        "s3_put": sum(k.s3_put * n for k, n in runs),
        "s3_get": sum(k.s3_get * n for k, n in runs),
        "log_gb": sum(k.log_bytes * n for k, n in runs) / GB,
        # a cold container reads its secret once (COLD_SHARE of the invocations that connect to a database); each
        # warm one again when its copy is SECRET_MAX_AGE_SECONDS old (lambdas/common/credentials.py)
        "secret_call": sum(
            (k.invocations.get("totesys-extract", 0) + k.invocations.get("totesys-load", 0)) * COLD_SHARE * n
            for k, n in runs
        )
        + SECRET_CONTAINERS * RUNS_PER_MONTH * 300 / SECRET_MAX_AGE_SECONDS,
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
    "transition": "Step Functions transitions (Standard: the parent, and the child of heavy runs)",
    "express_request": "Step Functions Express requests (the child of incremental runs)",
    "express_gb_s": "Step Functions Express duration (64 MB × measured seconds)",
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

- **Step Functions** ({transitions} in transitions, {express} in Express): a run enters {quiet_states} states of the
  Standard parent when nothing changed and {seed_states} when tables did, however many: the per-table Maps run in a
  child workflow (docs/state-machine.md), an Express one for incremental runs (billed per request, $1 a million,
  and per GB-second, not per state: {seed_child} states of a run at production volume cost nothing each) and a
  Standard one for heavy runs (reconciliation, a first load, a full refresh or repair, a re-run). The parent's
  states are now most of the line: a schedule every 15 minutes would cut it by two thirds, and so would the lease
  and the plan as one invocation (two states less per run). An Express run that fails as a whole costs one Wait
  (15 minutes, one state) and the Standard child's transitions.
- **Fixed lines** ({fixed}: one metric series, eight alarms, the two secrets) are paid whatever the runs do. Only
  the freshness series (the worst fact behind, every run) is published every hour; the stuck-rows and drift series
  only when they have something to tell; the detail per table is in log records read by saved Logs Insights
  queries. The CloudWatch dashboard ($3 a month beyond an account's first three) is opt-in (`-c dashboard=true`):
  the consoles, the alarms and the saved queries show what it shows (docs/operations.md#the-dashboard). Eight
  alarms are within the ten free.
- **Logs**: every state machine logs its failures with their data (`LogLevel.ERROR`); a Standard execution keeps
  its whole history in the console and the API for 90 days. `LogLevel.ALL` was 94 % of a run's log bytes.
- **S3 PUTs** follow the batches: per table with work, the Parquet part, its manifest and the head of each stage.
- **Lambda** is small: the work of a run at this volume is a few GB-seconds; the always-free 400,000 GB-seconds
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
        "| kind of run | parent states (Standard transitions) | the tables' work: child, its states | "
        "Lambda invocations | S3 GET | S3 PUT | log bytes | GB-s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for kind in RUN_KINDS.values():
        calls = ", ".join(f"{n} {name.removeprefix('totesys-')}" for name, n in kind.invocations.items())
        child = {"": "none", "EXPRESS": f"Express, {kind.child_states} states in {kind.express_seconds:.1f} s",
                 "STANDARD": f"Standard, {kind.child_states} states (transitions)"}[kind.child]  # fmt: skip
        lines.append(f"| {kind.title} | {kind.states} | {child} | {kind.calls} ({calls}) | {kind.s3_get} | "
                     f"{kind.s3_put} | {kind.log_bytes:,} | {kind.gb_seconds:.1f} |")  # fmt: skip
    lines += [
        "",
        "GB-s: each invocation's local wall time (in-process, this machine) times its function's memory in the "
        "synthesized template; cold starts are priced on a line of their own. Log bytes: the Lambdas' log lines of "
        "the run plus what the execution logs record: each state machine's failures with their data "
        "(`LogLevel.ERROR`). An Express child's seconds are "
        "its local wall time (in-process, this machine), billed in 100 ms steps of 64 MB.",
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
            seed_child=RUN_KINDS["seed"].child_states,
            transitions=_money(seed["transition"]),
            express=_money(seed["express_request"] + seed["express_gb_s"]),
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
