"""The lessons: what each step says, what the user looks at, what Enter does, and what is checked.

Text may name {api}, {dashboard}, {service}, {repo}, {data}, {log}, {ns}, and what a step remembered:
{old} (what users got before a release) and {new} (the version released).
"""

from __future__ import annotations

from dataclasses import dataclass

from rheostat.tutorial import actions as a
from rheostat.tutorial import checks as c
from rheostat.tutorial.state import Check


@dataclass(frozen=True)
class Step:
    name: str  # printed beside ✓ or ✗, and on failure
    text: str  # what is happening, in a few plain sentences
    action: a.Action | None = None  # done when the user presses Enter
    check: Check | None = None  # polled until ok, broken or timed out
    look: tuple[str, ...] = ()  # what to look at meanwhile
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Lesson:
    number: int
    title: str
    steps: tuple[Step, ...]


GET = "rheostat get canaries --server {api}"

LESSONS: tuple[Lesson, ...] = (
    Lesson(
        1,
        "your first canary",
        (
            Step(
                "write the repository",
                "Rheostat deploys what a Git repository says. A Workload is the application (here a small web "
                "app, run as local processes); a Canary says how a new version of it goes live.",
                action=a.Commit(a.first_files),
                check=c.in_git,
                look=("the files: ls {repo}/apps/web", "the history: git -C {repo} log --oneline"),
            ),
            Step(
                "start rheostat run",
                "`rheostat run` follows the repository: it starts the application behind a real Envoy proxy "
                "and serves an API and a dashboard. The tutorial also plays some users who call the app.",
                action=a.Start(),
                check=c.at_rest,
                look=("the dashboard: {dashboard}", GET, "the app, as users reach it: curl {service}/"),
                timeout_s=90.0,
            ),
            Step(
                "release a new version",
                "Releasing is a commit. Rheostat starts the new version beside the old one, sends it 25% of "
                "users, checks its success rate and latency every second, then 50%, then promotes it.",
                action=a.Commit(a.release("canary"), a.remember_versions),
                check=c.promoted,
                look=("the canary page: {dashboard}", GET),
            ),
        ),
    ),
    Lesson(
        2,
        "a failed release and its rollback",
        (
            Step(
                "release a version that fails",
                "This version answers errors to half of its requests. Its checks fail, and after two failed "
                "checks (analysis.threshold) Rheostat sends every user back to the version that works. Nobody "
                "has to be woken up.",
                action=a.Commit(a.release("canary", errors=True), a.remember_versions),
                check=c.rolled_back,
                look=(GET, "rheostat events --kind Canary --server {api}"),
            ),
        ),
    ),
    Lesson(
        3,
        "an A/B test",
        (
            Step(
                "start an A/B test",
                "An A/B test sends only chosen requests to the new version: here those with the header "
                "x-user-group: insiders (analysis.match). After three good checks (iterations) it waits at a "
                "confirm-promotion gate for you.",
                action=a.Commit(a.release("ab"), a.remember_versions),
                check=c.ab_waiting,
                look=(
                    "as an insider: curl -H 'x-user-group: insiders' {service}/",
                    "as anyone else: curl {service}/",
                    GET,
                ),
            ),
            Step(
                "approve the promotion",
                "You have seen insiders get {new} and everyone else {old}. Approving opens the gate: {new} is "
                "promoted for everyone.",
                action=a.Approve("web"),
                check=c.promoted,
                look=(GET,),
            ),
        ),
    ),
    Lesson(
        4,
        "a blue/green switch",
        (
            Step(
                "deploy the green version",
                "Blue/green runs the new version beside the old one with no user traffic: only a load test "
                "reaches it, on Host: web-canary. After three good checks it waits for your approval.",
                action=a.Commit(a.release("bluegreen"), a.remember_versions),
                check=c.bluegreen_waiting,
                look=(
                    "users: curl {service}/",
                    "the new version: curl -H 'Host: web-canary' {service}/",
                    GET,
                ),
            ),
            Step(
                "switch",
                "Approving switches every user to {new} at once; after one more check it becomes the primary.",
                action=a.Approve("web"),
                check=c.promoted,
                look=(GET,),
            ),
        ),
    ),
    Lesson(
        5,
        "a feature flag rolled out to a share of users",
        (
            Step(
                "add a flag",
                "A feature flag lives in Git too (an OpenFeature FeatureFlag), and applications ask for it over "
                "OFREP. new-checkout starts off. Its Canary will roll out changes to it by share of users, judged "
                "by the checkouts web counts per variant.",
                action=a.AddFlag(),
                check=c.flag_adopted,
                look=(
                    "rheostat get flags --server {api}",
                    'curl -X POST -d \'{"context": {"targetingKey": "user-1"}}\' '
                    "{api}/ofrep/v1/evaluate/flags/new-checkout",
                ),
            ),
            Step(
                "turn it on for a share of users",
                "Turning the flag on in Git does not turn it on for everyone: 25% of users get it, then 50%, "
                "while their checkouts succeed. A user keeps the same answer as the share grows. It then waits "
                "for your approval.",
                action=a.Commit(a.flag_files("on")),
                check=c.flag_waiting,
                look=("rheostat get flags --server {api}", "rheostat get canaries --server {api}"),
            ),
            Step(
                "approve the flag",
                "Approving promotes the new definition: new-checkout is on for every user.",
                action=a.Approve("checkout"),
                check=c.flag_promoted,
                look=("rheostat get flags --server {api}",),
            ),
        ),
    ),
    Lesson(
        6,
        "a policy that blocks a commit",
        (
            Step(
                "add a policy",
                "Policies (OPA Gatekeeper's, unchanged) check every commit before anything of it is applied. This "
                "starter policy says every Workload declares a readiness probe, so that no replica gets traffic "
                "before it answers.",
                action=a.Commit(a.policy_files),
                check=c.policy_applied,
                look=("rheostat get violations --server {api}",),
            ),
            Step(
                "commit a version that breaks it",
                "This commit releases {new} without a readiness probe. The policy gate refuses the whole commit: "
                "nothing of it is applied, and users keep getting {old}, the last good state.",
                action=a.Commit(a.release("canary", probe=False), a.remember_versions),
                check=c.commit_blocked,
                look=("rheostat get violations --server {api}", "rheostat get kustomizations --server {api}"),
            ),
            Step(
                "fix it",
                "Put the probe back and commit: the gate lets the commit through and {new} is released as a "
                "canary.",
                action=a.Commit(a.fix_probe),
                check=c.promoted,
                look=(GET,),
            ),
        ),
    ),
)
