"""The incident review in a browser, served by the service: ``/ui/``.

    routes.py   the pages (GET, open like the read API) and ``POST /v1/incidents/{id}/chat/stream``
    layout.py   the frame of every page: navigation and the token panel
    pages.py    the incident list and the runbook browser
    incident_page.py  one incident: evidence, timeline, charts, agent, actions, paging, approval, chat
    html.py     HTML built escaped by default (`h`), markdown rendered without raw HTML
    sse.py      a chat answer as server-sent events
    static/     app.js (token panel, approve / deny, the chat stream reader) and app.css

Plain server-rendered HTML with a little JavaScript; nothing is loaded from anywhere but the service.

**How the page gets the token.** Approve, deny and chat need the service token, like every other
mutating call. The page never contains it: a person pastes it into the token field, and the script keeps
it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer`` on those calls only. Why:

- a token in the served HTML would sit in the page source, the browser cache and history, and anything
  that can read the page (the pages themselves are open, like the read API) would read the token;
- a cookie would be sent by the browser on its own, with any request to the service, including ones
  another site's page makes (cross-site request forgery); a header set by our own script is sent only
  when our script decides to, and another origin can neither read our storage nor set that header on a
  request to us without a CORS permission this service never grants;
- ``sessionStorage`` lives as long as the tab (``localStorage`` would keep it on disk indefinitely).

What is left is script running inside the page (XSS), which could read the storage: every piece of
record text is escaped (`html.h`), markdown is rendered with raw HTML off, and the pages are served with a
Content-Security-Policy that allows only this origin's own script file, so injected markup cannot run.
"""

from __future__ import annotations

from selfheal.service.web.routes import api_router, router

__all__ = ["api_router", "router"]
