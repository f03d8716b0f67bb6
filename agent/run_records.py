"""Reading the ``agent_runs`` table: what a listing or a review needs without building a responder.

The responder (`agent.responder`) writes the rows; readers (the CLI's ``runs``, the read API, the web
list, chat) import this module instead, so they load neither LangGraph nor the monitor.
"""

from __future__ import annotations

import json
from typing import Any

from store import Store, where_equal


def agent_runs(
    store: Store, *, incident_id: str | None = None, status: str | None = None, with_state: bool = True
) -> list[dict[str, Any]]:
    """Rows of ``agent_runs`` (JSON columns decoded), oldest first.

    ``with_state=False`` leaves out the ``state`` column (a whole run: steps, plan, tool outputs), for
    listings that show runs without reading them.
    """
    clause, params = where_equal(incident_id=incident_id, status=status)
    columns = "*" if with_state else "* EXCLUDE (state)"
    frame = store.query(f"SELECT {columns} FROM agent_runs{clause} ORDER BY started_at, attempt", params)
    rows = frame.to_dict("records")
    for row in rows:
        for column in ("waiting", "state") if with_state else ("waiting",):
            row[column] = json.loads(row[column]) if isinstance(row[column], str) else None
    return rows
