"""One direct room per pair: `Room.pair_key` and a unique constraint on (tenant, pair_key).

Existing direct rooms get their key; where a pair already has several rooms, the oldest keeps the
key (rooms.create returns it from now on) and the others keep their messages without one.
"""
import hashlib

from django.db import migrations, models


def _key(a: str, b: str) -> str:
    # A copy of rooms.models.pair_key as of this migration (migrations must not follow model code).
    first, second = sorted((a, b))
    return hashlib.sha256(f"{len(first)}:{first}{second}".encode()).hexdigest()


def fill_pair_keys(apps, schema_editor):  # type: ignore[no-untyped-def]
    Room = apps.get_model("rooms", "Room")
    RoomMember = apps.get_model("rooms", "RoomMember")
    members: dict[str, list[str]] = {}
    rows = RoomMember.objects.filter(room__kind="direct").values_list("room_id", "user").iterator()
    for room_id, user in rows:
        members.setdefault(room_id, []).append(user)
    taken: set[tuple[str, str]] = set()
    for room in Room.objects.filter(kind="direct").order_by("created_at", "id").iterator():
        people = members.get(room.id, [])
        if len(people) != 2:
            continue
        key = (room.tenant, _key(*people))
        if key in taken:
            continue
        taken.add(key)
        Room.objects.filter(pk=room.pk).update(pair_key=key[1])


class Migration(migrations.Migration):

    dependencies = [
        ("rooms", "0002_call_job_jobcomment_jobquery_jobanswer_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="room",
            name="pair_key",
            field=models.CharField(blank=True, default=None, max_length=64, null=True),
        ),
        migrations.RunPython(fill_pair_keys, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="room",
            constraint=models.UniqueConstraint(condition=models.Q(("pair_key__isnull", False)),
                                               fields=("tenant", "pair_key"), name="room_direct_pair_unique"),
        ),
    ]
