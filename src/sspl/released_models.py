"""The trained localization models the field's authors released (EZ-VSL, SLAVC, FNAC): what each was trained
on, its published score, the page to download it from and where to put it.

Each is a whole checkpoint (the ResNet-18 encoders included); :mod:`sspl.models.released` reads them as
they are. They are published on Google Drive pages, not stable file URLs, so sspl lists them
(``sspl weights``) rather than downloading them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .weights import cache_dir

__all__ = ["RELEASED_MODELS", "ReleasedModel", "released_dir"]


@dataclass(frozen=True)
class ReleasedModel:
    """A trained localization model its authors published (a whole checkpoint, every weight included).

    ``sspl weights`` says where to get each and where to put it (:meth:`path`); ``sspl localize
    --checkpoint`` / ``sspl evaluate --checkpoint`` / ``sspl.load`` read the file as it is.

    Attributes:
        name: our name for it (also its folder under :func:`released_dir`).
        method: the method, and the checkpoint format (:mod:`sspl.models.released`).
        trained_on: the training set.
        score: the published score, with its benchmark and metric.
        page: where the authors publish it.
        file: the file to download there.
    """

    name: str
    method: str
    trained_on: str
    score: str
    page: str
    file: str = "best.pth"

    def path(self) -> Path:
        """Where sspl looks for it: ``<cache>/released/<name>/<file>``."""
        return released_dir() / self.name / self.file


_EZVSL_PAGE = (
    "https://drive.google.com/drive/folders/1I9nyn8VGU4HFEBDpEUpqFz1ywWcqzC6C (github.com/stoneMo/EZ-VSL)"
)
_SLAVC_PAGE = "https://drive.google.com/file/d/1wHufeLWZBv97IaE0cv0GrFk4pLX5NMUj (github.com/stoneMo/SLAVC)"
_FNAC_PAGE = "https://drive.google.com/drive/folders/15NoQSmC6zIetq771pZ_Q6Z7dea957Hhz (github.com/OpenNLPLab/FNAC_AVL)"

#: The released models of the field (the READMEs of their official repositories), by our name.
RELEASED_MODELS: dict[str, ReleasedModel] = {
    m.name: m
    for m in (
        ReleasedModel(
            "ezvsl-flickr10k", "ezvsl", "Flickr 10k", "Flickr SoundNet cIoU@0.5 81.93, AUC 62.58", _EZVSL_PAGE
        ),
        ReleasedModel(
            "ezvsl-flickr144k",
            "ezvsl",
            "Flickr 144k",
            "Flickr SoundNet cIoU@0.5 83.13, AUC 63.06",
            _EZVSL_PAGE,
        ),
        ReleasedModel(
            "ezvsl-vggsound10k", "ezvsl", "VGG-Sound 10k", "VGG-SS cIoU@0.5 37.18, AUC 38.75", _EZVSL_PAGE
        ),
        ReleasedModel(
            "ezvsl-vggsound144k",
            "ezvsl",
            "VGG-Sound 144k",
            "VGG-SS cIoU@0.5 38.85, AUC 39.54; Flickr SoundNet 83.94, 63.60",
            _EZVSL_PAGE,
        ),
        ReleasedModel(
            "ezvsl-vggsoundfull", "ezvsl", "VGG-Sound (all)", "VGG-SS cIoU@0.5 39.34, AUC 39.78", _EZVSL_PAGE
        ),
        ReleasedModel(
            "ezvsl-heard110",
            "ezvsl",
            "VGG-Sound Heard 110",
            "Heard 110 cIoU@0.5 37.25, AUC 38.97; Unheard 110 39.57, 39.60",
            _EZVSL_PAGE,
        ),
        ReleasedModel(
            "slavc-vggsound144k",
            "slavc",
            "VGG-Sound 144k",
            "Extended Flickr-SoundNet AP 51.63, max-F1 59.10; Extended VGG-SS AP 32.95, max-F1 40.00",
            _SLAVC_PAGE,
        ),
        ReleasedModel("fnac-flickr10k", "fnac", "Flickr 10k", "VGG-SS cIoU@0.5 35.27, AUC 38.00", _FNAC_PAGE),
        ReleasedModel(
            "fnac-flickr144k", "fnac", "Flickr 144k", "VGG-SS cIoU@0.5 33.93, AUC 37.29", _FNAC_PAGE
        ),
        ReleasedModel(
            "fnac-vggsound10k", "fnac", "VGG-Sound 10k", "VGG-SS cIoU@0.5 37.29, AUC 38.99", _FNAC_PAGE
        ),
        ReleasedModel(
            "fnac-vggsound144k", "fnac", "VGG-Sound 144k", "VGG-SS cIoU@0.5 39.50, AUC 39.66", _FNAC_PAGE
        ),
    )
}


def released_dir() -> Path:
    """Where released models are put: ``<cache>/released`` (see :func:`cache_dir`)."""
    return cache_dir() / "released"
