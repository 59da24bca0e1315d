"""Who did it: the user every write service takes, and how ledger and events name them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

# A service's ``actor``: the request's user, or None for the system (seeding, relays).
Actor = AbstractBaseUser | AnonymousUser | None


def actor_ref(actor: Actor) -> int | None:
    """The id ledger rows and event payloads record: None for the system or anonymous."""
    return actor.pk if actor is not None and actor.is_authenticated else None
