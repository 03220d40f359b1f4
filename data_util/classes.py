"""The 27 output classes of the DCASE 2024 Task 4 system, their masks, aliases and median windows.

One source of truth: every other module takes class names, indices and masks from here.
Order = the reference encoder's order (10 DESED classes, then 17 MAESTRO-real classes); the released
checkpoints and pseudo-label files depend on it.
"""
from __future__ import annotations

import torch

DESED_CLASSES: tuple[str, ...] = (
    "Alarm_bell_ringing",
    "Blender",
    "Cat",
    "Dishes",
    "Dog",
    "Electric_shaver_toothbrush",
    "Frying",
    "Running_water",
    "Speech",
    "Vacuum_cleaner",
)

MAESTRO_CLASSES: tuple[str, ...] = (
    "cutlery and dishes",
    "furniture dragging",
    "people talking",
    "children voices",
    "coffee machine",
    "footsteps",
    "large_vehicle",
    "car",
    "brakes_squeaking",
    "cash register beeping",
    "announcement",
    "shopping cart",
    "metro leaving",
    "metro approaching",
    "door opens/closes",
    "wind_blowing",
    "birds_singing",
)

CLASSES: tuple[str, ...] = DESED_CLASSES + MAESTRO_CLASSES
NUM_CLASSES = len(CLASSES)  # 27
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# The 11 MAESTRO classes that the DCASE 2024 challenge scores (mpAUC); the other 6 are trained only.
MAESTRO_EVAL_CLASSES: tuple[str, ...] = (
    "birds_singing",
    "car",
    "people talking",
    "footsteps",
    "children voices",
    "wind_blowing",
    "brakes_squeaking",
    "large_vehicle",
    "cutlery and dishes",
    "metro approaching",
    "metro leaving",
)

# Aliases *duplicate* an event under a second label (the original label stays).
MAESTRO_DESED_ALIAS: dict[str, str] = {
    "people talking": "Speech",
    "children voices": "Speech",
    "announcement": "Speech",
    "cutlery and dishes": "Dishes",
}
DESED_MAESTRO_ALIAS: dict[str, str] = {
    "Dishes": "cutlery and dishes",
    "Speech": "people talking",
}

# Median-filter windows in frames (of 64 ms), one per class in CLASSES order.
MEDIAN_WINDOWS: tuple[int, ...] = (
    3, 9, 9, 5, 5, 5, 9, 7, 11, 9,  # DESED
    7, 3, 9, 13, 7, 1, 13, 3, 13, 7, 5, 5, 1, 13, 17, 13, 15,  # MAESTRO
)

DESED_DOMAIN = "desed"
MAESTRO_DOMAIN = "maestro"

# Classes a clip of each domain is annotated for: its own classes plus the alias targets.
VALID_CLASSES: dict[str, tuple[str, ...]] = {
    DESED_DOMAIN: DESED_CLASSES + ("cutlery and dishes", "people talking"),
    MAESTRO_DOMAIN: MAESTRO_CLASSES + ("Speech", "Dishes"),
}


def class_mask(domain: str) -> torch.Tensor:
    """Boolean mask [27] of the classes that clips of ``domain`` ('desed' or 'maestro') are labelled for."""
    if domain not in VALID_CLASSES:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(VALID_CLASSES)}")
    mask = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    mask[[CLASS_TO_INDEX[name] for name in VALID_CLASSES[domain]]] = True
    return mask


def class_indices(names) -> list[int]:
    """Indices of ``names`` in CLASSES, with an error naming any unknown label."""
    unknown = [n for n in names if n not in CLASS_TO_INDEX]
    if unknown:
        raise KeyError(f"unknown class label(s) {unknown}; expected names from data_util.classes.CLASSES")
    return [CLASS_TO_INDEX[n] for n in names]


def apply_aliases(labels, alias: dict[str, str]) -> list[str]:
    """Return ``labels`` followed by the alias of every label that has one (duplication, not renaming)."""
    return list(labels) + [alias[label] for label in labels if label in alias]


assert len(CLASSES) == 27 and len(MEDIAN_WINDOWS) == 27 and len(set(CLASSES)) == 27
assert set(MAESTRO_EVAL_CLASSES) <= set(MAESTRO_CLASSES)
