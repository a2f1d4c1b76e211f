"""Who may touch which topic: the one statement of the broker's access rules.

The embedded broker evaluates these functions on every subscribe and publish; the Mosquitto ACL file written by
`acl_file_text` states the same rules in Mosquitto's syntax, so both brokers enforce one policy.
"""

from __future__ import annotations

SERVICE_USERNAME = "edgewise-service"
TOPIC_ROOT = "edgewise/v1"
DEVICES_ROOT = f"{TOPIC_ROOT}/devices"


def device_topic_filter(device_id: str) -> str:
    """Everything a device may use: the topics under its own id."""
    return f"{DEVICES_ROOT}/{device_id}/#"


def allowed_filters(username: str | None) -> list[str]:
    """The topic filters `username` may publish to and subscribe within (none for anonymous clients)."""
    if not username:
        return []
    if username == SERVICE_USERNAME:
        return [f"{TOPIC_ROOT}/#"]
    return [device_topic_filter(username)]


def may_publish(username: str | None, topic: str) -> bool:
    """Whether `username` may publish to the concrete topic `topic`."""
    if not topic or "+" in topic or "#" in topic:
        return False
    return any(_covers(pattern, topic) for pattern in allowed_filters(username))


def may_subscribe(username: str | None, topic_filter: str) -> bool:
    """Whether `username` may subscribe to `topic_filter`.

    A wildcard in the request only passes where the rule itself has one at that level, so a device cannot
    widen its view with `+` or `#` (as with Mosquitto's ACL check of subscriptions).
    """
    if not topic_filter:
        return False
    return any(_covers(pattern, topic_filter) for pattern in allowed_filters(username))


def acl_file_text() -> str:
    """The Mosquitto ACL file: the service account everywhere under the root, each device under its own id."""
    return (
        "# Written by edgewise; edits are overwritten at the next start.\n"
        f"user {SERVICE_USERNAME}\n"
        f"topic readwrite {TOPIC_ROOT}/#\n"
        "\n"
        "# Every other account is a device, named by its id.\n"
        f"pattern readwrite {device_topic_filter('%u')}\n"
    )


def _covers(pattern: str, requested: str) -> bool:
    rule = pattern.split("/")
    levels = requested.split("/")
    for index, part in enumerate(rule):
        if part == "#":
            return True  # also covers the parent level itself, as MQTT matching does
        if index >= len(levels):
            return False
        level = levels[index]
        if level == "#" or (part != "+" and part != level):
            return False
    return len(levels) == len(rule)
