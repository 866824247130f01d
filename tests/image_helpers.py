"""Shared by the tests that build test-double images on the real engine."""

from __future__ import annotations

from typing import Any, BinaryIO


def built_image(client: Any, tag: str, context: BinaryIO) -> str:
    """`tag`, built from the tar `context` unless the engine has it already. The callers' tags
    are digests of the context's files and base image, so a present tag is that content."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        client.images.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, network_mode="none"
        )
    return tag
