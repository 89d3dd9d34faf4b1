"""The curriculum: eighteen stages in five spirals, and what exists for each.

Chapters point at modules, not the other way round: this table is the only place that
ties a stage number to its chapter folder, its library modules and its tests.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Stage:
    number: int
    title: str
    spiral: int
    slug: str
    reading_minutes: int
    modules: tuple[str, ...] = ()

    @property
    def chapter_dir(self) -> str:
        return f"stage-{self.number:02d}-{self.slug}"


SPIRALS = {
    1: "Foundations and first models",
    2: "Training dynamics",
    3: "The transformer",
    4: "Making it fast",
    5: "Modern practice",
}

STAGES: tuple[Stage, ...] = (
    Stage(1, "Markov chains and n-gram language models", 1, "ngrams", 60, ("spiral.ngram",)),
    Stage(2, "Automatic differentiation", 1, "autograd", 75,
          ("spiral.autograd.value", "spiral.autograd.forward", "spiral.autograd.tensor",
           "spiral.autograd.engine", "spiral.autograd.function", "spiral.autograd.gradcheck")),
    Stage(3, "Backpropagation deep dive", 1, "backprop", 75, ("spiral.nn.functional",)),
    Stage(4, "The neural language model (MLP)", 1, "mlp", 70,
          ("spiral.nn.module", "spiral.nn.layers", "spiral.models.mlp", "spiral.train",
           "spiral.checkpoint", "spiral.generate")),
    Stage(5, "Optimization theory", 2, "optimization", 70,
          ("spiral.optim.optimizers", "spiral.optim.schedules", "spiral.optim.clip")),
    Stage(6, "Training stability: initialization and normalization", 2, "stability", 70,
          ("spiral.nn.init", "spiral.nn.norm", "spiral.nn.residual")),
    Stage(7, "Attention from first principles", 3, "attention", 70,
          ("spiral.nn.attention", "spiral.models.attention_lm")),
    Stage(8, "Multi-head attention and the transformer", 3, "transformer", 80,
          ("spiral.nn.transformer", "spiral.models.gpt")),
    Stage(9, "Positional information", 3, "positional", 65, ("spiral.nn.positional",)),
    Stage(10, "Tokenization", 3, "tokenization", 70,
          ("spiral.tokenizers.bpe", "spiral.tokenizers.byte", "spiral.tokenizers.unigram")),
    Stage(11, "Memory analysis", 4, "memory", 60,
          ("spiral.profiling.memory", "spiral.profiling.memory_graph",
           "spiral.profiling.memory_model", "spiral.profiling.memory_profiler",
           "spiral.profiling.memory_layouts", "spiral.profiling.memory_witness",
           "spiral.profiling.memory_batch")),
    Stage(12, "Memory optimization", 4, "memory-optimization", 75, ("spiral.nn.checkpoint",)),
    Stage(13, "Distributed training", 4, "distributed", 75, ("spiral.distributed",)),
    Stage(14, "Architecture evolution", 5, "architectures", 70,
          ("spiral.nn.ffn", "spiral.scaling", "spiral.models.pretrained")),
    Stage(15, "Fine-tuning", 5, "finetuning", 60, ("spiral.finetune",)),
    Stage(16, "Alignment", 5, "alignment", 70, ("spiral.align",)),
    Stage(17, "Inference optimization", 5, "inference", 65, ("spiral.inference",)),
    Stage(18, "Quantization", 5, "quantization", 65, ("spiral.quant",)),
)


def get(number: int) -> Stage:
    for s in STAGES:
        if s.number == number:
            return s
    raise ValueError(f"there is no stage {number}; stages are numbered 1 to {len(STAGES)}")


def repo_root() -> Path | None:
    """The checkout this package runs from (None when installed without the repository)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "mkdocs.yml").is_file() and (parent / "src" / "spiral").is_dir():
            return parent
    return None


def status(stage: Stage, experiment_stages: set[int] | None = None) -> dict[str, bool]:
    """Which of chapter, code, experiments, tests and coverage map exist for ``stage``.

    ``experiment_stages`` is the set of stages that have experiments (the command line, which
    sits above :mod:`spiral.experiments`, supplies it; the library never imports them).
    """
    root = repo_root()
    code = bool(stage.modules) and all(
        _module_exists(m) for m in stage.modules
    )
    chapter = tests = coverage = False
    if root is not None:
        chapter = (root / "docs" / "stages" / stage.chapter_dir / "index.md").is_file()
        marker = f"pytest.mark.stage{stage.number}\n"
        tests = any(
            marker in p.read_text(encoding="utf-8", errors="replace")
            for p in (root / "tests").rglob("test_*.py")
        )
        coverage = (root / "docs" / "coverage" / f"stage-{stage.number:02d}.yaml").is_file()
    return {
        "chapter": chapter,
        "code": code,
        "experiments": stage.number in (experiment_stages or set()),
        "tests": tests,
        "coverage": coverage,
    }


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
