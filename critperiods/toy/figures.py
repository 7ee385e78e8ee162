"""The toy study's figures as the report files them (category *Toy landscapes*): file stem →
label, in the order of the findings. Plain data, so the Snakefile can read it without
importing the analysis."""

#: file stem → report label, in the order of the findings
FIGURE_LABELS = {
    "toy_convergence": "T1 convergence time vs degeneracy",
    "toy_escape": "T2 escape directions",
    "toy_noise_hessian": "T3 noise covariance vs Hessian",
    "toy_posterior": "T4 SGD endpoints over the posterior",
    "toy_llc": "T5 estimated λ̂ vs exact λ",
}

__all__ = ["FIGURE_LABELS"]
