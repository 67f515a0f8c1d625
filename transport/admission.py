"""strawberry runs what DocumentCache admitted: the document it parsed and the verdict of its
limits and validation, instead of parsing and validating again per operation."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from transport.documents import Compiled, DocumentCache


class AdmittedDocuments(SchemaExtension):
    def __init__(self, documents: DocumentCache) -> None:
        super().__init__()
        self.documents = documents
        self.compiled: Compiled | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            self.compiled = self.documents.get(context.query, context.operation_name)
            if self.compiled.document is not None:
                context.graphql_document = self.compiled.document
            else:  # the transports answer these themselves; should one get here, fail fast
                context.parse_options["max_tokens"] = self.documents.limits.max_tokens
        yield

    def on_validate(self) -> Iterator[None]:
        if self.compiled is not None and self.compiled.document is not None:
            # Limits, validation and (for variable page sizes) the cost with these variables.
            self.execution_context.pre_execution_errors = self.compiled.refusal(
                self.execution_context.variables)
        yield
