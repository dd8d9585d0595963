"""`make bench`: every benchmark, one after the other; copy the tables into docs/benchmarks.md."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    admission,
    analysis_harness,
    dashboard_bench,
    engine_ticks,
    envoy_overhead,
    flags_bench,
    gitops_scale,
    helm,
    kube_failover,
    kube_gitops,
    kube_scale,
    oci,
    policy_admission,
    policy_engines,
    sops,
)


def main() -> None:
    print(
        f"# rheostat benchmarks, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}, {len(__import__('os').sched_getaffinity(0))} cores\n"
    )
    print("## Engine: 1,000 canaries on the in-memory fakes\n")
    engine_ticks.main()
    print("\n## Envoy: overhead of the hop and time to apply a weight\n")
    envoy_overhead.main()
    print("\n## Analysis: the threshold judge and the sequential judge on the same traffic\n")
    analysis_harness.main(
        ["--seeds", "500", "--plots", str(Path(__file__).resolve().parents[1] / "docs" / "images")]
    )
    print("\n## GitOps: 1,000 Kustomizations of 10 objects each\n")
    gitops_scale.main()
    print("\n## Helm: 100 HelmReleases of a 20-template chart\n")
    helm.main()
    print("\n## Policy: Gatekeeper's general library\n")
    policy_admission.main()
    policy_engines.main()
    print("\n## Policy at admission: the webhook over TLS\n")
    admission.main()
    print("\n## Dashboard and API: 200 canaries progressing\n")
    dashboard_bench.main()
    print("\n## Flags: evaluation and OFREP\n")
    flags_bench.main([])
    print("\n## SOPS: a Kustomization of 50 encrypted Secrets\n")
    sops.main()
    print("\n## Kubernetes: 500 Canaries against kmock, `rheostat run --kubeconfig`\n")
    kube_scale.main([])
    print("\n## OCI artifacts: a 500-file Flux artifact from a local docker-registry\n")
    oci.main()
    print("\n## Kubernetes: leader failover, two replicas against kmock\n")
    kube_failover.main([])
    print("\n## GitOps into a cluster: 1,000 Kustomizations of 10 objects against kmock\n")
    kube_gitops.main([])


if __name__ == "__main__":
    main()
