"""library floor: the model library. Scan A1111 / ComfyUI model folders, identify each file
(formats.detect), hash it as A1111 and Civitai do, read its metadata and sidecars, cache it all
in a SQLite index, and find models by name, alias, path or hash. Builds no torch modules.

Entry points: `catalog.Library` (open, scan, hash_entries, find), `convert.convert_to_safetensors`,
`doctor.check_library`. See docs/architecture.md.
"""
