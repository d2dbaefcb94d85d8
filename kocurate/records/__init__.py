"""Canonical records: schema, presets, loading, and dataset folders in Hub layout."""

from .folder import check_output, hub_configs_yaml, minimal_card, set_default_card_renderer, write_dataset_folder
from .load import InputInfo, Loaded, data_files, file_sha256, files_fingerprint, load_records, looks_like_hub_id, read_table, to_canonical
from .manifest import Manifest, StepRecord, read_manifest
from .presets import PRESETS, Preset, get_preset, parse_mapping
from .schema import (
    CANONICAL,
    OPTIONAL,
    REMOVAL,
    REQUIRED_TEXT,
    canonical_order,
    concat_removed,
    empty_removed,
    removal_frame,
)

__all__ = [
    "CANONICAL", "OPTIONAL", "PRESETS", "REMOVAL", "REQUIRED_TEXT", "InputInfo", "Loaded", "Manifest",
    "Preset", "StepRecord", "canonical_order", "check_output", "concat_removed", "data_files",
    "empty_removed", "file_sha256", "files_fingerprint", "get_preset", "hub_configs_yaml", "load_records", "looks_like_hub_id",
    "minimal_card", "parse_mapping", "set_default_card_renderer", "read_manifest", "read_table", "removal_frame", "to_canonical",
    "write_dataset_folder",
]
