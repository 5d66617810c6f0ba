"""The layout of a run directory: :class:`RunDir`, the one place its file names are spelled.

A run directory is the unit of provenance (docs/architecture.md): the resolved ``config.yaml``,
``env.json``, ``metrics.jsonl``, ``checkpoints/last.pt``, ``results.json`` (written last: a run
that has one is complete) and what analysis adds (``plots/``, ``report.html``, ...). Every
module that reads or writes one of them asks a :class:`RunDir` for its path; nothing here reads
or writes a file, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOCK = ".lock"  # the advisory lock of the one writer (selfsup.run.lock)


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (``RunDir(path)``; ``path`` as given)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        """The fully resolved config the run trained with."""
        return self.path / "config.yaml"

    @property
    def env(self) -> Path:
        """Versions, git sha, command (and the commands of resumes)."""
        return self.path / "env.json"

    @property
    def metrics(self) -> Path:
        """One JSON record per line: steps, epoch monitors, skipped steps."""
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        """The last checkpoint, from which a run resumes and is evaluated."""
        return self.checkpoints / "last.pt"

    @property
    def results(self) -> Path:
        """The evaluation records; the last file a run writes."""
        return self.path / "results.json"

    @property
    def labelled_images(self) -> Path:
        """Fingerprints of the images whose labels a supervised / joint run trained on."""
        return self.path / "labelled_images.npy"

    @property
    def evals(self) -> Path:
        """The trained evaluations' own runs (fine-tuning, linear-aug, pseudo-label)."""
        return self.path / "evals"

    @property
    def embeddings(self) -> Path:
        """``epoch-NNNN.npy`` features of a fixed sample, ``labels.npy``, ``classes.json``."""
        return self.path / "embeddings"

    @property
    def embedding_labels(self) -> Path:
        """The labels of the embedded sample, saved once."""
        return self.embeddings / "labels.npy"

    @property
    def embedding_classes(self) -> Path:
        """The class names of the embedded sample, saved once."""
        return self.embeddings / "classes.json"

    def embedding(self, epoch: int) -> Path:
        """The sample's features after ``epoch``."""
        return self.embeddings / f"epoch-{epoch:04d}.npy"

    @property
    def correlation(self) -> Path:
        """``epoch-NNNN.json``: the projector's correlation matrix over epochs."""
        return self.path / "correlation"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def report(self) -> Path:
        """The self-contained HTML report (``selfsup report``)."""
        return self.path / "report.html"

    @property
    def export(self) -> Path:
        """Exported backbones (``selfsup export``)."""
        return self.path / "export"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (``train.tensorboard=true``), a view of ``metrics.jsonl``."""
        return self.path / "tensorboard"

    @property
    def index(self) -> Path:
        """ANNOY indexes of a split's features (``selfsup index``)."""
        return self.path / "index"

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    def plot(self, name: str) -> Path:
        """``plots/<name>``."""
        return self.plots / name

    def owned(self) -> list[Path]:
        """What replacing a run removes: the files and folders a run writes, the lock and the
        report aside."""
        return [
            self.config,
            self.labelled_images,
            self.env,
            self.metrics,
            self.results,
            self.checkpoints,
            self.evals,
            self.embeddings,
            self.correlation,
            self.index,
            self.plots,
            self.export,
        ]
