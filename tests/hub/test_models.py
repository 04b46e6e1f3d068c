"""hub.models: the tables hub.store reads and writes with its own SQL (one statement per batch) are
the ones the models declare, column for column."""
from __future__ import annotations

from django.db import models

from hub.models import PubKey, Publication, Stream, TokenRevocation


def columns(model: type[models.Model]) -> tuple[str, set[str]]:
    return model._meta.db_table, {f.column for f in model._meta.concrete_fields}


def test_the_stores_sql_names_the_models_tables_and_columns() -> None:
    assert columns(Stream) == ("hub_stream", {"name", "top", "epoch", "created_at"})
    assert columns(Publication) == ("hub_publication", {"channel", "offset", "ts", "sender", "data"})
    assert columns(PubKey) == ("hub_pubkey", {"channel", "key", "offset", "created_at"})
    assert columns(TokenRevocation)[0] == "hub_revocation"
    assert [f.name for f in Publication._meta.pk_fields] == ["channel", "offset"]  # one row per offset
