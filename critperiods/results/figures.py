"""The figures a run draws, as the report files them: file stem → (category, label), in
reading order. Plain data, so the Snakefile can read it without importing the analysis."""

#: The figures of the report, in reading order: file stem → (category, label).
FIGURES = {
    "critical_period": ("1 Critical period", "1a final sharp accuracy vs switch epoch"),
    "critical_period_vs_temperature": ("1 Critical period", "1b end vs batch size"),
    "learning_curves": ("2 Training", "2 learning curves"),
    "llc": ("3 Local learning coefficient", "3a local learning coefficient λ̂ vs epoch"),
    "llc_traces": ("3 Local learning coefficient", "3b SGLD chain diagnostics"),
    "divergence": ("4 Divergence", "4a distance to the always-blurred run"),
    "divergence_final": ("4 Divergence", "4b divergences at the end of training, and the drop"),
    "perturbation": ("6 Perturbations", "6a lasting divergence vs perturbation epoch"),
    "perturbation_growth": ("6 Perturbations", "6b growth after a perturbation"),
}

__all__ = ["FIGURES"]
