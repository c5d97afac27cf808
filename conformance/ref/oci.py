"""The OCI image documents: media types, descriptors, index, manifest and config, read strictly.

Every document is parsed as I-JSON (UTF-8, no duplicate names: considerations.md, because two
parsers that disagree on `{"layers": A, "layers": B}` see two different images), then checked for
the fields this implementation relies on. Unknown fields are kept out of the way, never an error
(config.md, manifest.md: implementations MUST NOT error on them). Writing is deterministic: sorted
keys, compact separators, UTF-8, so the same image always gets the same digests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conformance.ref.digest import parse_digest
from conformance.ref.errors import LayoutError

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
LAYER_NONDISTRIBUTABLE_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
LAYER_NONDISTRIBUTABLE_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
LAYER_NONDISTRIBUTABLE_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#: The annotation that names a manifest in index.json (image-layout.md § index.json).
REF_NAME = "org.opencontainers.image.ref.name"

#: Layer media types this implementation applies, with their compression. Docker's are accepted on
#: read only (manifest.md allows them for compatibility). zstd (layer.md: "+zstd", RFC 8878) is decoded
#: with the zstandard module or the zstd program, whichever the host has (streams.ZstdStream); with
#: neither, applying such a layer is a LayerError that says what to install.
LAYER_COMPRESSION = {
    LAYER_TAR: "none",
    LAYER_GZIP: "gzip",
    LAYER_ZSTD: "zstd",
    LAYER_NONDISTRIBUTABLE_TAR: "none",
    LAYER_NONDISTRIBUTABLE_GZIP: "gzip",
    LAYER_NONDISTRIBUTABLE_ZSTD: "zstd",
    DOCKER_LAYER_TAR: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_FOREIGN_LAYER_GZIP: "gzip",
}

#: The media type `Layout.add_layer` writes for each compression.
COMPRESSED_LAYER = {"none": LAYER_TAR, "gzip": LAYER_GZIP, "zstd": LAYER_ZSTD}

MANIFEST_TYPES = (MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (INDEX, DOCKER_MANIFEST_LIST)
CONFIG_TYPES = (CONFIG, DOCKER_CONFIG)


def layer_compression(media_type: str) -> str:
    """"none", "gzip" or "zstd" for a layer media type; a LayoutError for anything this cannot apply."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise LayoutError(f"layer mediaType {media_type!r} is not supported") from None


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate name {key!r}")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_strict(data: bytes, what: str) -> Any:
    """Parse I-JSON: UTF-8 only, no duplicate names, no NaN/Infinity; errors name `what`."""
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise LayoutError(f"{what}: not UTF-8 ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # json.JSONDecodeError is a ValueError, and so are ours
        raise LayoutError(f"{what}: malformed JSON ({err})") from None


def dumps_canonical(doc: Any) -> bytes:
    """Deterministic JSON: sorted keys, compact, UTF-8 (umoci and skopeo also write compact JSON)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _object(doc: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(doc, dict):
        raise LayoutError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _string(doc: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise LayoutError(f"{what}: {key!r} must be a string, got {value!r}")
    return value


def _annotations(doc: Mapping[str, Any], what: str) -> dict[str, str]:
    value = doc.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise LayoutError(f"{what}: 'annotations' must be a map of strings")
    return dict(value)


def _schema_version(doc: Mapping[str, Any], what: str) -> None:
    version = doc.get("schemaVersion")
    if type(version) is not int or version != 2:  # bool is an int: `true` must not pass
        raise LayoutError(f"{what}: schemaVersion must be 2, got {version!r}")


@dataclass(frozen=True)
class Descriptor:
    """A typed reference to content: what it is, its digest and its exact size (descriptor.md)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Descriptor:
        """Check a descriptor object: mediaType, a digest on the grammar, a non-negative integer size."""
        doc = _object(doc, what)
        media_type = _string(doc, "mediaType", what)
        digest = _string(doc, "digest", what)
        assert media_type is not None and digest is not None
        try:
            parse_digest(digest)
        except LayoutError as err:
            raise LayoutError(f"{what}: {err}") from None
        size = doc.get("size")
        if type(size) is not int or size < 0:
            raise LayoutError(f"{what}: size must be a non-negative integer, got {size!r}")
        platform = doc.get("platform")
        if platform is not None and not isinstance(platform, dict):
            raise LayoutError(f"{what}: 'platform' must be an object")
        urls = doc.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise LayoutError(f"{what}: 'urls' must be a list of strings")
        return cls(media_type, digest, size, _annotations(doc, what), platform, tuple(urls),
                   _string(doc, "artifactType", what, required=False))

    def to_json(self) -> dict[str, Any]:
        """The descriptor as written in a manifest or index."""
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        if self.platform is not None:
            doc["platform"] = dict(self.platform)
        if self.urls:
            doc["urls"] = list(self.urls)
        if self.artifact_type is not None:
            doc["artifactType"] = self.artifact_type
        return doc

    @property
    def ref_name(self) -> str | None:
        """The `org.opencontainers.image.ref.name` annotation (the tag in an image layout)."""
        return self.annotations.get(REF_NAME)

    def short(self) -> str:
        """`sha256:0123456789ab..`: enough of the digest to name a blob in a message."""
        return self.digest[:19] + ".."


def _descriptors(doc: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    value = doc.get(key)
    if not isinstance(value, list):  # index.json "manifests": null broke readers (moby #47210)
        raise LayoutError(f"{what}: {key!r} must be a list, got {value!r}")
    return tuple(Descriptor.from_json(item, f"{what} {key}[{n}]") for n, item in enumerate(value))


@dataclass(frozen=True)
class Index:
    """An image index (index.json of a layout, or a multi-platform image): a list of manifests."""

    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Index:
        """Check an index; a document that also has `layers` or `config` is refused (CVE-2021-41190)."""
        doc = _object(doc, what)
        _schema_version(doc, what)
        media_type = _string(doc, "mediaType", what, required=False)
        if media_type is not None and media_type not in INDEX_TYPES:
            raise LayoutError(f"{what}: mediaType {media_type!r} is not an image index")
        if "layers" in doc or "config" in doc:
            raise LayoutError(f"{what}: an index with 'layers' or 'config' is ambiguous (CVE-2021-41190)")
        return cls(_descriptors(doc, "manifests", what), _annotations(doc, what))

    def to_json(self) -> dict[str, Any]:
        """The index document."""
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX,
                               "manifests": [m.to_json() for m in self.manifests]}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and the layers in stack order, base first (manifest.md)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MANIFEST
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Manifest:
        """Check a manifest; one that also has `manifests` is refused (CVE-2021-41190)."""
        doc = _object(doc, what)
        _schema_version(doc, what)
        media_type = _string(doc, "mediaType", what, required=False)
        if media_type is not None and media_type not in MANIFEST_TYPES:
            raise LayoutError(f"{what}: mediaType {media_type!r} is not an image manifest")
        if "manifests" in doc:
            raise LayoutError(f"{what}: a manifest with 'manifests' is ambiguous (CVE-2021-41190)")
        config = Descriptor.from_json(doc.get("config"), f"{what} config")
        return cls(config, _descriptors(doc, "layers", what), media_type or MANIFEST, _annotations(doc, what))

    def to_json(self) -> dict[str, Any]:
        """The manifest document."""
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type, "config": self.config.to_json(),
                               "layers": [layer.to_json() for layer in self.layers]}
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc


@dataclass(frozen=True)
class History:
    """One build step (config.md § history); `empty_layer` steps (ENV, LABEL...) have no layer."""

    created_by: str | None = None
    empty_layer: bool = False
    comment: str | None = None
    created: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The history entry, without the fields that are unset."""
        doc: dict[str, Any] = {}
        if self.created is not None:
            doc["created"] = self.created
        if self.created_by is not None:
            doc["created_by"] = self.created_by
        if self.comment is not None:
            doc["comment"] = self.comment
        if self.empty_layer:
            doc["empty_layer"] = True
        return doc


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the layers need: the DiffIDs in order, and the history."""

    diff_ids: tuple[str, ...]
    history: tuple[History, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any, what: str, *, check_type: bool = True) -> ImageConfig:
        """Check `rootfs` (type MUST be "layers", config.md) and the DiffIDs; keep the rest as data."""
        doc = _object(doc, what)
        rootfs = _object(doc.get("rootfs"), f"{what} rootfs")
        if rootfs.get("type") != "layers" and check_type:
            raise LayoutError(f"{what}: rootfs.type must be 'layers', got {rootfs.get('type')!r}")
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list):
            raise LayoutError(f"{what}: rootfs.diff_ids must be a list, got {diff_ids!r}")
        for n, one in enumerate(diff_ids):
            try:
                parse_digest(one)
            except LayoutError as err:
                raise LayoutError(f"{what}: rootfs.diff_ids[{n}]: {err}") from None
        history = doc.get("history") or []
        if not isinstance(history, list):
            raise LayoutError(f"{what}: history must be a list")
        steps = []
        for n, item in enumerate(history):
            step = _object(item, f"{what} history[{n}]")
            empty = step.get("empty_layer", False)
            if not isinstance(empty, bool):
                raise LayoutError(f"{what}: history[{n}].empty_layer must be a boolean")
            steps.append(History(_str_or_none(step.get("created_by")), empty, _str_or_none(step.get("comment")),
                                 _str_or_none(step.get("created"))))
        return cls(tuple(diff_ids), tuple(steps), doc)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def config_document(diff_ids: Sequence[str], history: Sequence[History], *, architecture: str, os: str = "linux",
                    config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A minimal image config for `diff_ids` (no timestamps, so it is reproducible).

    config.md: the non-empty history entries must match the layers one to one.
    """
    layered = sum(1 for step in history if not step.empty_layer)
    if history and layered != len(diff_ids):
        raise LayoutError(f"history has {layered} non-empty steps for {len(diff_ids)} layers")
    doc: dict[str, Any] = {"architecture": architecture, "os": os,
                           "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}
    if history:
        doc["history"] = [step.to_json() for step in history]
    if config:
        doc["config"] = dict(config)
    return doc
