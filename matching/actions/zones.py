"""Service zones (admins): create, list, read, replace, delete.

A zone belongs to its creator's tenant and is found only there. Its geometry is checked by the
zone index before anything is stored (a zone this index cannot load is refused, never committed);
each change is audited, and at commit it reaches this process's matcher at once and the others
through matching.sync.
"""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from core.audit import record
from core.errors import bad_request, not_found
from core.times import epoch_ms
from hub.auth import DEFAULT_TENANT
from hub.rpc import Caller
from matching.matcher import ZONE_RES, matcher
from matching.models import Zone
from matching.zoneindex import GeometryError, PreparedZone, ZoneIndex

log = logging.getLogger("matching.actions.zones")


def zone_dict(z: Zone) -> dict[str, Any]:
    return {"id": z.id, "name": z.name, "categories": list(z.categories), "geometry": z.geometry,
            "active": z.active, "version": z.version,
            "created_at": z.created_at.isoformat() if z.created_at else None,
            "updated_at": z.updated_at.isoformat() if z.updated_at else None,
            "created_at_ms": epoch_ms(z.created_at), "updated_at_ms": epoch_ms(z.updated_at)}


def prepare_zone_geometry(geometry: Any) -> PreparedZone:
    """Validate a zone geometry and build its index entry, before anything is stored: a zone that
    this index cannot load is refused (bad_request), never committed."""
    try:
        return ZoneIndex(res=ZONE_RES, max_cells=settings.HUB_ZONE_MAX_CELLS).prepare(geometry)
    except GeometryError as exc:
        raise bad_request(f"geometry: {exc}") from exc
    except Exception as exc:  # the index failed on a valid geometry: refuse it, keep the process up
        log.exception("zone geometry refused: the zone index cannot load it")
        raise bad_request(f"geometry: the zone index cannot load this geometry ({type(exc).__name__})") from exc


def _check_zone_fields(name: Any, categories: Any, geometry: Any) -> tuple[list[str], PreparedZone]:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise bad_request("name: a non-empty string of at most 200 characters")
    if (not isinstance(categories, list) or not categories or len(categories) > 100
            or not all(isinstance(c, str) and 0 < len(c) <= 64 for c in categories)):
        raise bad_request("categories: a non-empty list of category names (1-64 characters)")
    return sorted(set(categories)), prepare_zone_geometry(geometry)


def tenant_of(caller: Caller) -> str:
    """The tenant a caller's zones and assignments live in (no tenant: the default one)."""
    return caller.tenant or DEFAULT_TENANT


def create_zone(caller: Caller, name: str, categories: list[str], geometry: dict[str, Any],
                active: bool = True) -> dict[str, Any]:
    """A zone of the caller's tenant."""
    cats, prepared = _check_zone_fields(name, categories, geometry)
    m = matcher()
    with transaction.atomic():
        z = Zone.objects.create(name=name.strip(), categories=cats, geometry=geometry, active=bool(active),
                                created_by=caller.user, tenant=tenant_of(caller))
        record(caller.user, "zones.create", z.id, role=caller.role, tenant=caller.tenant, name=z.name,
               categories=cats, active=z.active)
        transaction.on_commit(lambda: m.zone_saved(z, prepared))
    return zone_dict(z)


def list_zones(category: str | None = None, active: bool | None = None,
               tenant: str = DEFAULT_TENANT) -> list[dict[str, Any]]:
    qs = Zone.objects.filter(tenant=tenant)
    if active is not None:
        qs = qs.filter(active=active)
    zones = [zone_dict(z) for z in qs]
    if category is not None:
        zones = [z for z in zones if category in z["categories"]]
    return zones


def get_zone(zone_id: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
    """A zone of `tenant`; another tenant's zone is indistinguishable from a missing one."""
    z = Zone.objects.filter(id=zone_id, tenant=tenant).first()
    if z is None:
        raise not_found(f"no zone {zone_id}")
    return zone_dict(z)


def replace_zone(caller: Caller, zone_id: str, name: str, categories: list[str], geometry: dict[str, Any],
                 active: bool = True) -> dict[str, Any]:
    cats, prepared = _check_zone_fields(name, categories, geometry)
    m = matcher()
    with transaction.atomic():
        z = Zone.objects.select_for_update().filter(id=zone_id, tenant=tenant_of(caller)).first()
        if z is None:
            raise not_found(f"no zone {zone_id}")
        z.name, z.categories, z.geometry, z.active = name.strip(), cats, geometry, bool(active)
        z.version = z.version + 1
        z.save()
        record(caller.user, "zones.replace", z.id, role=caller.role, tenant=caller.tenant, name=z.name,
               categories=cats, active=z.active, version=z.version)
        transaction.on_commit(lambda: m.zone_saved(z, prepared))
    return zone_dict(z)


def delete_zone(caller: Caller, zone_id: str) -> dict[str, Any]:
    m = matcher()
    with transaction.atomic():
        z = Zone.objects.select_for_update().filter(id=zone_id, tenant=tenant_of(caller)).first()
        if z is None:
            raise not_found(f"no zone {zone_id}")
        z.delete()
        record(caller.user, "zones.delete", zone_id, role=caller.role, tenant=caller.tenant, name=z.name)
        transaction.on_commit(lambda: m.zone_deleted(zone_id))
    return {"id": zone_id, "deleted": True}

