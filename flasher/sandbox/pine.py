"""The sandbox's pine resources: the catalog as an OData entity graph, queried like the API.

Resources: device_type, cpu_architecture, device_type_alias, application, application_tag,
release, release_tag, and the fleet releases' service, image, release_image, delta and user
(flasher.sandbox.fleet_releases). Responses have the API's shape: `{"d": [...]}`, expanded
navigations as arrays, unexpanded single navigations as `{"__id", "__deferred"}`, `__metadata`
on every entity. Anonymous callers see public things only; any authenticated caller also sees
the sandbox user's fleets. Imports only the standard library and flasher.sandbox modules.

The `device` resource holds the sandbox's devices (flasher.sandbox.devices) and the ones
registered at run time (flasher.sandbox.registration), shown to logged-in callers only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flasher.sandbox import fleet_releases
from flasher.sandbox.catalog import Catalog, Release
from flasher.sandbox.devices import DEVICE_FIELDS
from flasher.sandbox.manifest import contract, logo_data_uri
from flasher.sandbox.odata import ODataError, QueryOptions, evaluate, order_key


class UnknownResource(LookupError):
    """The path names no pine resource (the API answers 404)."""


@dataclass(frozen=True)
class ResourceSchema:
    fields: tuple[str, ...]
    one: Mapping[str, str]  # navigation -> target resource; the row holds the target id
    many: Mapping[str, tuple[str, str]]  # navigation -> (target resource, its link back)


SCHEMAS: dict[str, ResourceSchema] = {
    "device_type": ResourceSchema(
        ("id", "slug", "name", "is_private", "logo", "contract"),
        {"is_of__cpu_architecture": "cpu_architecture"},
        {
            "device_type_alias": ("device_type_alias", "references__device_type"),
            "is_default_for__application": ("application", "is_for__device_type"),
        },
    ),
    "cpu_architecture": ResourceSchema(
        ("id", "slug"),
        {},
        {"is_of__device_type": ("device_type", "is_of__cpu_architecture")},
    ),
    "device_type_alias": ResourceSchema(
        ("id", "is_referenced_by__alias"), {"references__device_type": "device_type"}, {}
    ),
    "application": ResourceSchema(
        (
            "id",
            "created_at",
            "app_name",
            "slug",
            "uuid",
            "is_host",
            "is_public",
            "is_archived",
            "is_discoverable",
            "should_track_latest_release",
        ),
        {"is_for__device_type": "device_type"},
        {
            "application_tag": ("application_tag", "application"),
            "owns__release": ("release", "belongs_to__application"),
        },
    ),
    "application_tag": ResourceSchema(
        ("id", "tag_key", "value"), {"application": "application"}, {}
    ),
    "release": ResourceSchema(
        (
            "id",
            "created_at",
            "commit",
            "raw_version",
            "semver",
            "semver_major",
            "semver_minor",
            "semver_patch",
            "semver_prerelease",
            "semver_build",
            "revision",
            "variant",
            "status",
            "source",
            "is_final",
            "is_finalized_at__date",
            "is_invalidated",
            "is_passing_tests",
            "phase",
            "known_issue_list",
            "invalidation_reason",
            "note",
            "contract",
        ),
        {"belongs_to__application": "application", **fleet_releases.RELEASE_SINGLE},
        {"release_tag": ("release_tag", "release"), **fleet_releases.RELEASE_COLLECTIONS},
    ),
    "release_tag": ResourceSchema(("id", "tag_key", "value"), {"release": "release"}, {}),
    **{name: ResourceSchema(*spec) for name, spec in fleet_releases.RESOURCE_SCHEMAS.items()},
    "device": ResourceSchema(
        DEVICE_FIELDS,
        {"belongs_to__application": "application", "is_of__device_type": "device_type"},
        {},
    ),
}


class PineStore:
    """Rows of every resource, built once from a catalog; queries are read-only."""

    def __init__(self, catalog: Catalog, *, delta_build_s: float = 3.0) -> None:
        self.rows: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in SCHEMAS}
        self._private_apps = {a.id for a in catalog.applications if not a.is_public}
        self._private_types = {d.id for d in catalog.device_types if d.is_private}
        self._load(catalog)
        account = catalog.account
        self.deltas = fleet_releases.load(
            self.rows, user_id=account.user_id, username=account.username, build_s=delta_build_s
        )
        self._children: dict[tuple[str, str], dict[int, list[int]]] = {}
        for schema in SCHEMAS.values():
            for target, link in schema.many.values():
                index: dict[int, list[int]] = {}
                for row in self.rows[target].values():
                    if row.get(link) is not None:
                        index.setdefault(row[link], []).append(row["id"])
                self._children[(target, link)] = index

    def _add(self, resource: str, row: dict[str, Any]) -> None:
        self.rows[resource][row["id"]] = row

    def _load(self, catalog: Catalog) -> None:
        for arch in catalog.cpu_architectures:
            self._add("cpu_architecture", {"id": arch.id, "slug": arch.slug})
        alias_id = 1
        type_ids = {}
        for dt in catalog.device_types:
            type_ids[dt.slug] = dt.id
            self._add(
                "device_type",
                {
                    "id": dt.id,
                    "slug": dt.slug,
                    "name": dt.name,
                    "is_private": dt.is_private,
                    "logo": logo_data_uri(dt),
                    "contract": contract(dt),
                    "is_of__cpu_architecture": catalog.arch(dt.arch).id,
                },
            )
            for alias in dict.fromkeys((dt.slug, *dt.aliases)):
                self._add(
                    "device_type_alias",
                    {
                        "id": alias_id,
                        "is_referenced_by__alias": alias,
                        "references__device_type": dt.id,
                    },
                )
                alias_id += 1
        tag_id = 1
        for app in catalog.applications:
            first = min((r.created_at for r in app.releases), default="2019-01-01T00:00:00.000Z")
            self._add(
                "application",
                {
                    "id": app.id,
                    "created_at": first,
                    "app_name": app.app_name,
                    "slug": app.slug,
                    "uuid": app.uuid,
                    "is_host": app.is_host,
                    "is_public": app.is_public,
                    "is_archived": app.is_archived,
                    "is_discoverable": app.is_public,
                    "should_track_latest_release": True,
                    "is_for__device_type": type_ids[app.device_type],
                },
            )
            for tag in app.tags:
                self._add(
                    "application_tag",
                    {
                        "id": tag_id,
                        "tag_key": tag.tag_key,
                        "value": tag.value,
                        "application": app.id,
                    },
                )
                tag_id += 1
            for release in app.releases:
                self._add("release", _release_row(release))
                for tag in release.tags:
                    self._add(
                        "release_tag",
                        {
                            "id": tag_id,
                            "tag_key": tag.tag_key,
                            "value": tag.value,
                            "release": release.id,
                        },
                    )
                    tag_id += 1

    def add_devices(self, rows: list[dict[str, Any]]) -> None:
        """The sandbox's devices (flasher.sandbox.devices); only logged-in callers see them."""
        for row in rows:
            self._add("device", row)

    def id_by_key(self, resource: str, field: str, value: str) -> int | None:
        """The id of the row whose alternate key `field` is `value` (`device(uuid='…')`)."""
        for row in self.rows.get(resource, {}).values():
            if str(row.get(field)) == value:
                return int(row["id"])
        return None

    def remove(self, resource: str, entity_id: int) -> bool:
        """Drop a row no other resource lists (a deleted device)."""
        return self.rows[resource].pop(entity_id, None) is not None

    def visible(self, resource: str, row: Mapping[str, Any], authenticated: bool) -> bool:
        if authenticated:
            return True
        if resource == "device" or resource in fleet_releases.PRIVATE_RESOURCES:
            return False
        if resource == "device_type":
            return row["id"] not in self._private_types
        app_id = {
            "application": row.get("id"),
            "application_tag": row.get("application"),
            "release": row.get("belongs_to__application"),
            "release_tag": self.rows["release"]
            .get(row.get("release", -1), {})
            .get("belongs_to__application"),
        }.get(resource)
        return app_id not in self._private_apps

    def query(
        self,
        resource: str,
        options: QueryOptions,
        *,
        entity_id: int | None = None,
        authenticated: bool = False,
    ) -> dict[str, Any]:
        """The response body for GET /<version>/<resource>[(<id>)]?<options>."""
        if resource not in SCHEMAS:
            raise UnknownResource(resource)
        validate(resource, options)
        if resource == "delta":
            self.deltas.advance()
        ids = list(self.rows[resource]) if entity_id is None else [entity_id]
        entities = [
            _Entity(self, resource, self.rows[resource][i], authenticated)
            for i in ids
            if i in self.rows[resource]
            and self.visible(resource, self.rows[resource][i], authenticated)
        ]
        return {"d": [render(e, options) for e in select(entities, options)]}


def _release_row(release: Release) -> dict[str, Any]:
    parsed = release.parsed
    return {
        "id": release.id,
        "created_at": release.created_at,
        "commit": f"{release.id:08x}" * 4,
        "raw_version": release.raw_version,
        "semver": f"{parsed.major}.{parsed.minor}.{parsed.patch}",
        "semver_major": parsed.major,
        "semver_minor": parsed.minor,
        "semver_patch": parsed.patch,
        "semver_prerelease": parsed.prerelease or "",
        "semver_build": ".".join(p for p in release.build_parts if not p.startswith("rev")),
        "revision": release.revision,
        "variant": release.variant,
        "status": release.status,
        "source": "cloud",
        "is_final": release.is_final,
        "is_finalized_at__date": release.created_at if release.is_final else None,
        "is_invalidated": release.is_invalidated,
        "is_passing_tests": True,
        "phase": release.phase,
        "known_issue_list": release.known_issue_list,
        "invalidation_reason": None,
        "note": None,
        "contract": release.contract,
        "belongs_to__application": release.application_id,
    }


class _Entity:
    """A row seen through the OData evaluator (implements odata.Node)."""

    __slots__ = ("authenticated", "resource", "row", "store")

    def __init__(
        self, store: PineStore, resource: str, row: dict[str, Any], authenticated: bool
    ) -> None:
        self.store = store
        self.resource = resource
        self.row = row
        self.authenticated = authenticated

    @property
    def key(self) -> Any:
        return self.row["id"]

    @property
    def schema(self) -> ResourceSchema:
        return SCHEMAS[self.resource]

    def _entity(self, resource: str, entity_id: int | None) -> _Entity | None:
        row = self.store.rows[resource].get(entity_id) if entity_id is not None else None
        if row is None or not self.store.visible(resource, row, self.authenticated):
            return None
        return _Entity(self.store, resource, row, self.authenticated)

    def prop(self, name: str) -> Any:
        schema = self.schema
        if name in schema.fields:
            return self.row[name]
        if name in schema.one:
            return self._entity(schema.one[name], self.row.get(name))
        if name in schema.many:
            target, link = schema.many[name]
            children = self.store._children[(target, link)].get(self.row["id"], [])
            found = (self._entity(target, i) for i in children)
            return [e for e in found if e is not None]
        raise ODataError(f"Unknown property '{name}' of '{self.resource}'")


def validate(resource: str, options: QueryOptions) -> None:
    """Reject unknown names in $select, $expand and $orderby before touching any row."""
    schema = SCHEMAS[resource]
    for name in options.select or ():
        if name != "*" and name not in schema.fields and name not in schema.one:
            if name in schema.many and name in options.expand:
                continue
            raise ODataError(f"Unknown property '{name}' of '{resource}'")
    for path, _descending in options.orderby:
        if path.segments[0] not in schema.fields and path.segments[0] not in schema.one:
            raise ODataError(f"Cannot $orderby '{path.segments[0]}' of '{resource}'")
    for name, sub in options.expand.items():
        target = schema.one.get(name) or schema.many.get(name, ("", ""))[0]
        if not target:
            raise ODataError(f"Cannot $expand '{name}' of '{resource}'")
        validate(target, sub)


def select(entities: list[_Entity], options: QueryOptions) -> list[_Entity]:
    """Apply $filter, $orderby, $skip and $top."""
    if options.filter is not None:
        condition = options.filter
        entities = [e for e in entities if evaluate(condition, e)]
    for path, descending in reversed(options.orderby):
        entities.sort(key=lambda e, p=path: order_key(e, p), reverse=descending)  # type: ignore[misc]
    if options.skip:
        entities = entities[options.skip :]
    if options.top is not None:
        entities = entities[: options.top]
    return entities


def render(entity: _Entity, options: QueryOptions) -> dict[str, Any]:
    """One entity as JSON: selected fields, deferred or expanded navigations, __metadata."""
    schema = entity.schema
    names = options.select
    if names is None or "*" in names:
        names = (*schema.fields, *schema.one)
    out: dict[str, Any] = {}
    for name in names:
        if name in options.expand:
            continue
        if name in schema.fields:
            out[name] = entity.row[name]
        elif name in schema.one:
            target_id = entity.row.get(name)
            out[name] = (
                None
                if target_id is None
                else {
                    "__id": target_id,
                    "__deferred": {"uri": f"/resin/{schema.one[name]}(@id)?@id={target_id}"},
                }
            )
        elif name in schema.many:
            raise ODataError(f"Cannot $select the collection '{name}' without $expand")
    for name, sub in options.expand.items():
        value = entity.prop(name)
        members = [] if value is None else value if isinstance(value, list) else [value]
        out[name] = [render(e, sub) for e in select(members, sub)]
    out["__metadata"] = {"uri": f"/resin/{entity.resource}(@id)?@id={entity.key}"}
    return out
