"""What the tutorial writes into its Git repository: whole files, so that any lesson can start from any state."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

NS = "tutorial"
WORKLOAD = "apps/web/workload.yaml"
CANARY = "apps/web/canary.yaml"
FLAG = "flags/checkout.yaml"
POLICY = "policies/workload-readiness-probe.yaml"
README = "README.md"

README_TEXT = """# The rheostat tutorial's repository

`rheostat tutorial` commits here, and the `rheostat run` it starts applies every YAML file of this
repository. Edit and commit as the tutorial says; `rheostat tutorial --reset` starts over.
"""


@dataclass(frozen=True)
class Ports:
    api: int  # `rheostat run`'s API, dashboard, load tester and OFREP
    service: int  # the Envoy listener users reach the `web` application on

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api}"


def workload(version: str, ports: Ports, *, errors: bool = False, probe: bool = True) -> str:
    env = f'\n      OFREP_URL: "{ports.api_url}"  # where the app asks for its feature flags'
    if errors:
        env += '\n      ERROR_RATE: "0.5"  # this version fails half of its requests'
    probe_line = "\n    readinessProbe: {path: /readyz}" if probe else ""
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 1
  template:
    command: [python, -m, rheostat.demo.app, --port, "{{port}}", --version, "{version}"]
    env:{env}{probe_line}
"""


def _gate(ports: Ports) -> str:
    return f"""
    - name: ask-before-promotion  # closed until you approve: `rheostat approve web -n {NS}`
      type: confirm-promotion
      url: {ports.api_url}/loadtester/gate/check"""


def canary(ports: Ports, strategy: str = "canary") -> str:
    """The Canary of `web`: a weighted canary, an A/B test (`ab`) or a blue/green switch (`bluegreen`)."""
    if strategy == "canary":
        shape = (
            "    stepWeight: 25  # 25% of users more at each interval whose checks pass\n    maxWeight: 50\n"
        )
        gate = ""
    elif strategy == "ab":
        shape = (
            "    iterations: 3  # three checks, then promotion\n"
            "    match:  # only these requests reach the new version\n"
            "    - headers: {x-user-group: {exact: insiders}}\n"
        )
        gate = _gate(ports)
    elif strategy == "bluegreen":
        shape = "    iterations: 3  # three checks on the idle new version, then the switch\n"
        gate = _gate(ports)
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: web, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}}
  progressDeadlineSeconds: 60
  service: {{port: {ports.service}}}  # users reach web through Envoy on 127.0.0.1:{ports.service}
  analysis:
    interval: 1s  # short for the tutorial; 30s to a few minutes in real life
    threshold: 2  # failed checks before the rollback
{shape}    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 5s}}
    - {{name: request-duration, thresholdRange: {{max: 500}}, interval: 5s}}
    webhooks:
    - name: load-test  # traffic for the new version, so that its checks have data
      url: {ports.api_url}/loadtester/
      timeout: 5s
      metadata: {{cmd: "hey -z 1m -q 10 -c 2 -host web-canary http://127.0.0.1:{ports.service}/"}}{gate}
"""


def flag(ports: Ports, default: str) -> str:
    return f"""apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {{name: checkout, namespace: {NS}}}
spec:
  flagSpec:
    flags:
      new-checkout:
        state: ENABLED
        variants: {{"on": true, "off": false}}
        defaultVariant: "{default}"  # what users get
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: checkout, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: core.openfeature.dev/v1beta1, kind: FeatureFlag, name: checkout}}
  flag: {{key: new-checkout, appRef: {{name: web}}}}  # web's processes count checkouts per variant
  progressDeadlineSeconds: 60
  analysis:
    interval: 1s
    threshold: 2
    stepWeight: 25  # 25% of users more at each interval whose checks pass
    maxWeight: 50
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 5s}}
    webhooks:{_gate(ports).replace("web -n", "checkout -n")}
"""


def policy() -> str:
    """The starter policy every Workload must declare a readiness probe, as shipped."""
    library = resources.files("rheostat.policy").joinpath("library", "workload-readiness-probe.yaml")
    return library.read_text()
