"""Organ tables and class maps, as data.

The organ table is the campaign's canonical classes (value -> name, 0 is
background). A class map says how one source's label values (a public
dataset, TotalSegmentator, an AbdomenAtlas release) land on the table. Both
are plain tables, in the spirit of TotalSegmentator's ``class_map``: adding a
preset is adding rows, never adding a branch. Each organ may carry its coded
meaning (:class:`OrganCode`, SNOMED CT), which a DICOM-SEG segment needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

# --------------------------------------------------------------------------
# Tables (data)
# --------------------------------------------------------------------------

#: The default canonical classes. Names follow TotalSegmentator.
DEFAULT_ORGANS: tuple[tuple[int, str], ...] = (
    (1, "spleen"),
    (2, "kidney_right"),
    (3, "kidney_left"),
    (4, "gallbladder"),
    (5, "liver"),
    (6, "stomach"),
    (7, "aorta"),
    (8, "inferior_vena_cava"),
    (9, "pancreas"),
)

#: CID 7150 "Anatomical Structure", the segmented property category of every organ here.
#: (SNOMED CT 123037004, as TotalSegmentator and dcmqi use; not 91723000.)
ANATOMICAL_STRUCTURE: tuple[str, str] = ("123037004", "Anatomical Structure")
#: SNOMED CT laterality qualifiers (the modifier of a paired organ's type).
LATERALITY_CODES: Mapping[str, tuple[str, str]] = MappingProxyType({"right": ("24028007", "Right"), "left": ("7771000", "Left")})


@dataclass(frozen=True)
class OrganCode:
    """An organ's coded meaning, as a DICOM-SEG segment carries it (SNOMED CT unless ``scheme`` says otherwise).

    ``code``/``meaning`` are the segmented property type; ``laterality``
    (``right``/``left``) becomes its modifier; the category (always SNOMED CT)
    defaults to Anatomical Structure.
    """

    code: str
    meaning: str
    laterality: str | None = None
    scheme: str = "SCT"
    category_code: str = ANATOMICAL_STRUCTURE[0]
    category_meaning: str = ANATOMICAL_STRUCTURE[1]

    def __post_init__(self):
        for name in ("code", "meaning", "scheme", "category_code", "category_meaning"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"organ code: {name} must be a non-empty string, got {value!r}")
        if self.scheme == "SCT" and not self.code.isdigit():
            raise ValueError(f"organ code: a SNOMED CT (SCT) concept id is digits, got {self.code!r}")
        if not self.category_code.isdigit():  # the category is always a SNOMED CT concept (CID 7150)
            raise ValueError(f"organ code: category_code must be a SNOMED CT concept id (digits), got {self.category_code!r}")
        if self.laterality is not None and self.laterality not in LATERALITY_CODES:
            raise ValueError(f"organ code: laterality must be one of {sorted(LATERALITY_CODES)}, got {self.laterality!r}")


#: The SNOMED CT codes of the organs alqa knows, from TotalSegmentator's public
#: SNOMED mapping (resources/totalsegmentator_snomed_mapping.csv). A table built
#: from names gets these; a custom table may give its own (campaign config).
KNOWN_ORGAN_CODES: Mapping[str, OrganCode] = MappingProxyType(
    {
        "spleen": OrganCode("78961009", "Spleen"),
        "kidney_right": OrganCode("64033007", "Kidney", laterality="right"),
        "kidney_left": OrganCode("64033007", "Kidney", laterality="left"),
        "gallbladder": OrganCode("28231008", "Gallbladder"),
        "liver": OrganCode("10200004", "Liver"),
        "stomach": OrganCode("69695003", "Stomach"),
        "aorta": OrganCode("15825003", "Aorta"),
        "inferior_vena_cava": OrganCode("64131007", "Inferior vena cava"),
        "pancreas": OrganCode("15776009", "Pancreas"),
    }
)

#: Other names sources use for the same organ (lower-case) -> canonical name.
ORGAN_SYNONYMS: Mapping[str, str] = MappingProxyType(
    {
        "gall_bladder": "gallbladder",
        "postcava": "inferior_vena_cava",
        "ivc": "inferior_vena_cava",
        "vena_cava_inferior": "inferior_vena_cava",
        "kidney_r": "kidney_right",
        "right_kidney": "kidney_right",
        "kidney_l": "kidney_left",
        "left_kidney": "kidney_left",
    }
)

#: Source label value -> source organ name, one table per preset.
CLASS_MAP_PRESETS_RAW: Mapping[str, Mapping[int, str]] = MappingProxyType(
    {
        # TotalSegmentator v2, task "total" (only the organs alqa knows).
        "total": {
            1: "spleen",
            2: "kidney_right",
            3: "kidney_left",
            4: "gallbladder",
            5: "liver",
            6: "stomach",
            7: "pancreas",
            52: "aorta",
            63: "inferior_vena_cava",
        },
        # TotalSegmentator v1.
        "totalsegmentator_v1": {
            1: "spleen",
            2: "kidney_right",
            3: "kidney_left",
            4: "gallbladder",
            5: "liver",
            6: "stomach",
            7: "aorta",
            8: "inferior_vena_cava",
            10: "pancreas",
        },
        # AbdomenAtlas 1.0 release: alphabetical, with its own organ names.
        "abdomenatlas_1.0": {
            1: "aorta",
            2: "gall_bladder",
            3: "kidney_left",
            4: "kidney_right",
            5: "liver",
            6: "pancreas",
            7: "postcava",
            8: "spleen",
            9: "stomach",
        },
    }
)

#: Alternative spellings of preset names.
PRESET_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "totalsegmentator_v2": "total",
        "totalsegmentator": "total",
        "abdomenatlas": "abdomenatlas_1.0",
        "abdomenatlas1.0": "abdomenatlas_1.0",
    }
)


def canonical_organ_name(name: str) -> str:
    """Lower-case, strip, and resolve synonyms (``gall_bladder`` -> ``gallbladder``)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return ORGAN_SYNONYMS.get(key, key)


# --------------------------------------------------------------------------
# Organ table
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Organ:
    value: int
    name: str
    #: its coded meaning (DICOM-SEG); not part of equality, so tables compare by values and names
    code: OrganCode | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OrganTable:
    """Canonical classes: ``organs`` in value order, background (0) implicit."""

    organs: tuple[Organ, ...]

    def __post_init__(self):
        values = [o.value for o in self.organs]
        names = [o.name for o in self.organs]
        if any(v <= 0 or v > 255 for v in values):
            raise ValueError(f"organ values must be in 1..255, got {values}")
        if len(set(values)) != len(values) or len(set(names)) != len(names):
            raise ValueError(f"organ values and names must be unique: {list(zip(values, names))}")
        object.__setattr__(self, "organs", tuple(sorted(self.organs, key=lambda o: o.value)))

    @classmethod
    def from_pairs(cls, pairs, codes: Mapping[str, OrganCode] | None = None) -> "OrganTable":
        """From ``(value, name)`` pairs; each organ gets ``codes[name]``, else its known code, else none."""
        given = {canonical_organ_name(n): c for n, c in (codes or {}).items()}
        organs = []
        for v, n in pairs:
            name = canonical_organ_name(n)
            organs.append(Organ(int(v), name, given.get(name, KNOWN_ORGAN_CODES.get(name))))
        unknown = sorted(set(given) - {o.name for o in organs})
        if unknown:
            raise ValueError(f"codes given for organs not in the table: {unknown}")
        return cls(tuple(organs))

    @classmethod
    def from_mapping(cls, name_to_value: Mapping[str, int], codes: Mapping[str, OrganCode] | None = None) -> "OrganTable":
        """From ``{"liver": 5, ...}`` (a ``background`` entry is ignored)."""
        return cls.from_pairs(
            ((int(v), n) for n, v in name_to_value.items() if canonical_organ_name(n) != "background"), codes
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.organs)

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(o.value for o in self.organs)

    @property
    def max_value(self) -> int:
        return max(self.values)

    def __len__(self) -> int:
        return len(self.organs)

    def value_of(self, name: str) -> int:
        key = canonical_organ_name(name)
        for o in self.organs:
            if o.name == key:
                return o.value
        raise KeyError(f"organ {name!r} is not in the organ table {self.names}")

    def name_of(self, value: int) -> str:
        for o in self.organs:
            if o.value == int(value):
                return o.name
        raise KeyError(f"value {value} is not in the organ table {self.values}")

    def code_of(self, name: str) -> OrganCode | None:
        """The organ's coded meaning (None when the table gives it none)."""
        key = canonical_organ_name(name)
        for o in self.organs:
            if o.name == key:
                return o.code
        raise KeyError(f"organ {name!r} is not in the organ table {self.names}")

    def channel_of(self, name: str) -> int:
        """Index of ``name`` among the per-organ channels (background excluded)."""
        return self.names.index(canonical_organ_name(name))

    def to_mapping(self) -> dict[str, int]:
        """``{"background": 0, name: value, ...}`` as in nnU-Net's ``dataset.json``."""
        return {"background": 0, **{o.name: o.value for o in self.organs}}

    def to_records(self) -> list[dict]:
        return [{"value": o.value, "name": o.name} for o in self.organs]


DEFAULT_ORGAN_TABLE = OrganTable.from_pairs(DEFAULT_ORGANS)


# --------------------------------------------------------------------------
# Class maps
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMap:
    """Source label value -> canonical organ name. Unlisted values are background."""

    name: str
    source_to_organ: Mapping[int, str]

    def __post_init__(self):
        object.__setattr__(
            self,
            "source_to_organ",
            MappingProxyType({int(k): canonical_organ_name(v) for k, v in dict(self.source_to_organ).items()}),
        )

    @property
    def organs(self) -> tuple[str, ...]:
        """Canonical names this source labels, in source-value order."""
        return tuple(self.source_to_organ[k] for k in sorted(self.source_to_organ))

    def restricted_to(self, table: OrganTable) -> "ClassMap":
        """Only the entries whose organ is in ``table``."""
        keep = {k: v for k, v in self.source_to_organ.items() if v in table.names}
        return ClassMap(self.name, keep)

    def lookup_table(self, table: OrganTable, max_source_value: int) -> np.ndarray:
        """Array ``lut`` with ``lut[source_value] = organ_value`` (0 if unmapped)."""
        size = max(max_source_value, max(self.source_to_organ, default=0)) + 1
        lut = np.zeros(size, dtype=np.uint8)
        for src, organ in self.source_to_organ.items():
            if organ in table.names:
                lut[src] = table.value_of(organ)
        return lut


def identity_class_map(table: OrganTable = DEFAULT_ORGAN_TABLE) -> ClassMap:
    """The class map of data already in organ-table numbering."""
    return ClassMap("organ_table", {o.value: o.name for o in table.organs})


def class_map_preset(name: str) -> ClassMap:
    """A built-in class map by name (``total``, ``totalsegmentator_v1``, ``abdomenatlas_1.0``)."""
    key = PRESET_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in CLASS_MAP_PRESETS_RAW:
        known = sorted(set(CLASS_MAP_PRESETS_RAW) | set(PRESET_ALIASES))
        raise KeyError(f"unknown class-map preset {name!r}; known: {known}")
    return ClassMap(key, CLASS_MAP_PRESETS_RAW[key])


def class_map_from_labels(name: str, labels: Mapping[str, int]) -> ClassMap:
    """A class map from an nnU-Net ``dataset.json`` ``labels`` block (name -> value)."""
    return ClassMap(
        name,
        {int(v): n for n, v in labels.items() if canonical_organ_name(n) != "background" and int(v) != 0},
    )


@dataclass(frozen=True, eq=False)
class RemapResult:
    """A remapped label array and what the remap dropped to background."""

    array: np.ndarray
    unmapped_voxels: int
    unmapped_values: tuple[int, ...]


def remap_labels(labels: np.ndarray, class_map: ClassMap, table: OrganTable = DEFAULT_ORGAN_TABLE) -> RemapResult:
    """Map a source label array onto ``table`` values through ``class_map``.

    Values the class map does not list (or whose organ the table lacks) become
    background; ``unmapped_voxels`` counts the non-zero voxels that did.
    The input is not modified. Vectorised through a lookup table.
    """
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"label array must be integer, got {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"label array has negative values (min {arr.min()})")
    top = int(arr.max()) if arr.size else 0
    lut = class_map.lookup_table(table, top)
    out = lut[arr]
    lost = (out == 0) & (arr != 0)
    unmapped_voxels = int(np.count_nonzero(lost))
    unmapped_values = tuple(int(v) for v in np.unique(arr[lost])) if unmapped_voxels else ()
    return RemapResult(out, unmapped_voxels, unmapped_values)


__all__ = [
    "ANATOMICAL_STRUCTURE",
    "CLASS_MAP_PRESETS_RAW",
    "DEFAULT_ORGANS",
    "DEFAULT_ORGAN_TABLE",
    "KNOWN_ORGAN_CODES",
    "LATERALITY_CODES",
    "ORGAN_SYNONYMS",
    "ClassMap",
    "Organ",
    "OrganCode",
    "OrganTable",
    "RemapResult",
    "canonical_organ_name",
    "class_map_from_labels",
    "class_map_preset",
    "identity_class_map",
    "remap_labels",
]
