"""What a run of the benchmark measures with: sizes and repetitions (`Plan`; `QUICK` for a
seconds-long run at tiny sizes), and what every case is given (`Bench`)."""

from dataclasses import dataclass

from app.core.config import Settings
from bench.server import Server


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run."""

    large: tuple[int, int] = (256, 100)
    small: tuple[int, int] = (8, 10)
    repeats: int = 5
    scaling_repeats: int = 3
    scaling_points: int = 5
    scaling_classes: int = 100
    """C of the sweep over N."""
    scaling_samples: int = 8
    """N of the sweep over C."""
    loop_elements: int = 256
    rps_seconds: float = 1.5
    rps_runs: int = 5
    concurrency: int = 8
    max_output_entries: int | None = None
    """Overrides GRADCHECK_MAX_OUTPUT_ENTRIES for the server and the sweeps (None: as set)."""
    candidate_repeats: int = 15
    """Runs of each request of case 6a (small: more runs, steadier medians)."""
    jacobian_classes: int = 100
    """C of case 6b; N is the largest the body limit allows."""
    jacobian_repeats: int = 3
    max_body_bytes: int | None = None
    """Overrides GRADCHECK_MAX_BODY_BYTES for the server and case 6b (None: as set)."""
    llm: tuple[int, int] = (256, 32_000)
    """N and C of case 7 (a fused kernel's gradient at LLM scale)."""
    llm_repeats: int = 5
    linear: tuple[int, int, int] = (1024, 1024, 32_000)
    """N, d and C of case 9 (an LM head fused with its loss, bfloat16 candidates)."""
    linear_repeats: int = 3
    hvp_samples: int = 256
    """N of case 8's Hessian-vector product sweep over C."""
    hvp_max_classes: int = 16_000
    hvp_points: int = 5

    def server_env(self) -> dict[str, str]:
        """The environment overrides of every server of the run (the limits set above)."""
        env = {}
        if self.max_output_entries is not None:
            env["GRADCHECK_MAX_OUTPUT_ENTRIES"] = str(self.max_output_entries)
        if self.max_body_bytes is not None:
            env["GRADCHECK_MAX_BODY_BYTES"] = str(self.max_body_bytes)
        return env

    def settings(self) -> Settings:
        """The service's settings as the run's servers have them."""
        overrides: dict[str, int] = {}
        if self.max_output_entries is not None:
            overrides["max_output_entries"] = self.max_output_entries
        if self.max_body_bytes is not None:
            overrides["max_body_bytes"] = self.max_body_bytes
        return Settings().model_copy(update=overrides)


QUICK = Plan(
    large=(16, 10),
    small=(4, 5),
    repeats=1,
    scaling_repeats=1,
    scaling_points=2,
    scaling_classes=10,
    scaling_samples=4,
    loop_elements=8,
    rps_seconds=0.3,
    rps_runs=1,
    concurrency=2,
    max_output_entries=20_000,
    candidate_repeats=1,
    jacobian_classes=10,
    jacobian_repeats=1,
    max_body_bytes=256 * 1024,
    llm=(8, 2000),
    llm_repeats=1,
    linear=(16, 32, 500),
    linear_repeats=1,
    hvp_samples=4,
    hvp_max_classes=400,
    hvp_points=3,
)


@dataclass(frozen=True)
class Bench:
    """What a case is measured with: the plan, the service's settings as its servers have
    them, the environment of any server it starts itself (`running_server(env)`), and the
    run's shared server (None for a case that starts its own, fresh ones)."""

    plan: Plan
    settings: Settings
    env: dict[str, str]
    server: Server | None = None

    @property
    def shared_server(self) -> Server:
        """The run's shared server (only for cases registered as using it)."""
        assert self.server is not None, "this case is registered without the shared server"
        return self.server
