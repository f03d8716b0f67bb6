"""Chat-style incident review: questions about one incident answered from its record, persisted per incident.

from agent.chat import ChatParts, conversation, reply

parts = ChatParts.for_platform(platform)
answer = reply(parts, "INC-3", "why did you roll back?", actor="cli:alice")
print(answer.answer)           # markdown quoting the record: audit ids, versions, thresholds
conversation(parts.store, "INC-3")   # every turn so far, oldest first

record.py    IncidentRecord: the incident, its latest investigation, audit rows, pages, serving history
answers.py   what the responder decided and did (why this action, root cause, paging, verified, ...)
state_answers.py  the incident in time and the platform's state (what changed, since when, serving, ...)
router.py    which question a message asks (weighted patterns); says so when none fits
commands.py  /timeline /evidence /actions /steps /runbook /report /history /sql /compare /help
llm_chat.py  with an LLM: the model, the incident's context and the read tools (record text is untrusted)
actions.py   an action asked for in chat: runbook allowlist, schema, preconditions, approval; audited
history.py   chat_messages (store migration 6)
"""

from agent.chat.engine import reply
from agent.chat.history import conversation
from agent.chat.parts import ChatParts
from agent.chat.reply import ChatReply

__all__ = ["ChatParts", "ChatReply", "conversation", "reply"]
