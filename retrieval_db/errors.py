"""Exceptions a knowledge-base user can catch and act on."""

from __future__ import annotations


class KnowledgeBaseError(Exception):
    """Base class: anything wrong with a knowledge base's files, inputs or use."""


class CorruptKnowledgeBaseError(KnowledgeBaseError):
    """A file of a saved knowledge base is missing, unreadable or inconsistent with the manifest."""


class EncoderMismatchError(KnowledgeBaseError):
    """Vectors from one encoder were about to meet vectors from another in the same space."""


class FilterError(KnowledgeBaseError, ValueError):
    """A metadata filter is malformed or larger than a search accepts."""
