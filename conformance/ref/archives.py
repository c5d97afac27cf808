"""Images in one file: `docker save` archives and OCI archives (`podman save --format oci-archive`).

Docker before 25 saves the legacy docker-archive format: manifest.json names each image's config and
layer tars ("Config", "RepoTags", "Layers"), and the config's rootfs.diff_ids say what each layer tar
must hash to. An OCI archive is an image layout in a tar. Both are read here without unpacking
anything but their own JSON and blobs, and every layer is checked against its DiffID before a rootfs is
touched, as ref.image does for layouts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath

from conformance.ref.errors import LayoutError
from conformance.ref.layers import ApplyOptions, ApplyStats, apply_layer
from conformance.ref.layout import Layout, write_layout
from conformance.ref.oci import CONFIG, LAYER_TAR, MANIFEST, REF_NAME, Descriptor, ImageConfig, Manifest, loads_strict

MAX_JSON = 4 << 20  # manifest.json and configs are small; a bigger one is not an image


@dataclass(frozen=True)
class ArchivedImage:
    """One image of a docker-archive: its tags, config and layer members, base first."""

    tags: tuple[str, ...]
    config: ImageConfig
    layers: tuple[str, ...]
    config_name: str  # the config's member in the archive


def is_docker_archive(path: str | os.PathLike[str]) -> bool:
    """A tar holding manifest.json at its top (and no oci-layout, which makes it an OCI archive)."""
    if not tarfile.is_tarfile(path):
        return False
    with tarfile.open(path) as archive:
        names = set(archive.getnames())
    return "manifest.json" in names and "oci-layout" not in names


def _member(archive: tarfile.TarFile, name: str, limit: int | None = None) -> bytes:
    where = os.fsdecode(archive.name or "<archive>")
    try:
        info = archive.getmember(name)
    except KeyError:
        raise LayoutError(f"{where}: no {name} in the archive") from None
    if not info.isfile():
        raise LayoutError(f"{where}: {name} is not a regular file")
    if limit is not None and info.size > limit:
        raise LayoutError(f"{where}: {name} is {info.size} bytes, over the {limit}-byte limit for JSON")
    handle = archive.extractfile(info)
    assert handle is not None  # a regular file always has data
    return handle.read()


def read_docker_archive(path: str | os.PathLike[str]) -> list[ArchivedImage]:
    """The images of a docker-archive; its JSON is checked as strictly as a layout's."""
    with tarfile.open(path) as archive:
        manifest = loads_strict(_member(archive, "manifest.json", MAX_JSON), f"{path}: manifest.json")
        if not isinstance(manifest, list) or not manifest:
            raise LayoutError(f"{path}: manifest.json must be a non-empty list of images")
        images = []
        for n, entry in enumerate(manifest):
            what = f"{path}: manifest.json[{n}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise LayoutError(f"{what}: needs Config (a name) and Layers (a list of names)")
            config = ImageConfig.from_json(loads_strict(_member(archive, entry["Config"], MAX_JSON), what),
                                           f"{what} config")
            layers = tuple(str(name) for name in entry["Layers"])
            if len(layers) != len(config.diff_ids):
                raise LayoutError(f"{what}: {len(layers)} layers but the config has {len(config.diff_ids)} diff_ids")
            images.append(ArchivedImage(tuple(entry.get("RepoTags") or ()), config, layers, entry["Config"]))
    return images


def choose_image(path: str | os.PathLike[str], tag: str | None) -> ArchivedImage:
    """The image of a docker-archive tagged `tag`, or its only one; an error listing the tags otherwise."""
    images = read_docker_archive(path)
    chosen = [i for i in images if tag is None or tag in i.tags]
    if len(chosen) != 1:
        raise LayoutError(f"{path}: {len(chosen)} images match {tag or 'no tag'}; tags: "
                          f"{sorted(t for i in images for t in i.tags)}")
    return chosen[0]


def apply_docker_archive(path: str | os.PathLike[str], rootfs: str | os.PathLike[str], *, tag: str | None = None,
                         options: ApplyOptions | None = None) -> list[ApplyStats]:
    """Apply an image of a docker-archive (the one tagged `tag`, or the only one) onto rootfs.

    Every layer member is hashed against its DiffID first; docker-archive layers are plain tars, though
    gzip ones (which `docker load` also takes) are decompressed by apply_layer's sniffing of the media type.
    """
    image = choose_image(path, tag)
    with tarfile.open(path) as archive:
        for name, diff_id in zip(image.layers, image.config.diff_ids, strict=True):
            digest = f"sha256:{hashlib.sha256(_member(archive, name)).hexdigest()}"
            if digest != diff_id:
                raise LayoutError(f"{path}: layer {name} hashes to {digest}, not its DiffID {diff_id}")
        return [apply_layer(rootfs, _member(archive, name), media_type=LAYER_TAR, options=options,
                            label=name, expected_diff_id=diff_id)
                for name, diff_id in zip(image.layers, image.config.diff_ids, strict=True)]


@contextmanager
def oci_archive(path: str | os.PathLike[str]) -> Iterator[str]:
    """An OCI archive unpacked into a temporary layout directory, removed on exit.

    Only oci-layout, index.json and blobs/<alg>/<encoded> regular files are taken: anything else (links,
    devices, other names, `..`) makes the archive invalid rather than being written anywhere.
    """
    temp = tempfile.mkdtemp(prefix="conformance-oci-archive-")
    try:
        with tarfile.open(path) as archive:
            for info in archive:
                parts = PurePosixPath(info.name).parts
                parts = parts[1:] if parts[:1] == (".",) else parts
                if info.isdir() and (parts in ((), ("blobs",)) or (len(parts) == 2 and parts[0] == "blobs")):
                    continue
                allowed = parts in (("oci-layout",), ("index.json",)) or (
                    len(parts) == 3 and parts[0] == "blobs" and all(p not in ("", ".", "..") for p in parts))
                if not (info.isfile() and allowed):
                    raise LayoutError(f"{path}: {info.name!r} does not belong in an OCI archive")
                target = os.path.join(temp, *parts)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                handle = archive.extractfile(info)
                assert handle is not None
                with handle, open(target, "xb") as out:
                    shutil.copyfileobj(handle, out, 1 << 20)
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def docker_archive_tags(path: str | os.PathLike[str]) -> list[str]:
    """Every RepoTag in a docker-archive (for messages and the CLI)."""
    return [tag for image in read_docker_archive(path) for tag in image.tags]


def config_json(image: ArchivedImage) -> str:
    """The image's config as JSON text (for inspect)."""
    return json.dumps(dict(image.config.document), indent=2, sort_keys=True)


@contextmanager
def archive_as_layout(path: str | os.PathLike[str], tag: str | None = None) -> Iterator[tuple[str, str | None]]:
    """A docker-archive or OCI archive as a temporary OCI layout: (its directory, the ref name to ask for).

    A docker-archive's image is rewritten blob for blob (layer tars as uncompressed layers, whose digest
    is their DiffID; the config as it was), so that everything that reads layouts reads it too.
    """
    if not is_docker_archive(path):
        with oci_archive(path) as unpacked:
            yield unpacked, tag
        return
    image = choose_image(path, tag)
    temp = tempfile.mkdtemp(prefix="conformance-docker-archive-")
    try:
        layout = Layout.create(temp)
        with tarfile.open(path) as archive:
            config = layout.add_blob(_member(archive, image.config_name, MAX_JSON), CONFIG)
            layers = []
            for name, diff_id in zip(image.layers, image.config.diff_ids, strict=True):
                descriptor = layout.add_blob(_member(archive, name), LAYER_TAR)
                if descriptor.digest != diff_id:
                    raise LayoutError(f"{path}: layer {name} hashes to {descriptor.digest}, not its DiffID {diff_id}")
                layers.append(descriptor)
        written = layout.add_json(Manifest(config, tuple(layers)).to_json(), MANIFEST)
        name = tag or (image.tags[0] if image.tags else "latest")
        write_layout(temp, [Descriptor(written.media_type, written.digest, written.size, {REF_NAME: name})])
        yield temp, name
    finally:
        shutil.rmtree(temp, ignore_errors=True)
