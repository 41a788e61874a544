"""Who may call what: one table for every RPC of every service, checked on every call.

Roles:
- `operator`: everything on the orchestrator, including the standing of PNodes (trusting them,
  releasing them from quarantine) and tokens (a token; `admin.yaml` holds the first one);
- `researcher`: networks, datasets, vocabularies, sessions, evaluation, export, the fleet and
  the validation log (a token);
- `pnode`: its own membership and reports, storage for the VNodes it hosts, hops between
  PNodes (its certificate);
- `orchestrator`: what the orchestrator asks of PNodes (its certificate);
- `relay`: its own membership (a certificate issued only to an operator's token); it forwards
  calls to the PNodes attached to it, and hops they send, in their callers' names (trusted
  infrastructure: a PNode believes whom its relay says a call is from);
- `anonymous`: no credential: health, enrolment of a new PNode, and the public read-only
  listings (the validation log among them) unless the operator turns them off
  (`public_reads=False`).
Finer checks (a PNode heartbeats only for its own id, a hop only from the PNode hosting
its sender) are made where the call is served, with the `Caller` this module resolves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dcnr.errors import PermissionDenied, Unauthenticated

OPERATOR, RESEARCHER, PNODE, ORCHESTRATOR, RELAY, ANONYMOUS = ("operator", "researcher", "pnode", "orchestrator",
                                                              "relay", "anonymous")
ROLES = (OPERATOR, RESEARCHER, PNODE, ORCHESTRATOR, RELAY, ANONYMOUS)


@dataclass(frozen=True)
class Caller:
    """Who makes a call: a role, and the token name or certificate id it was proven with (and, for a
    certificate, the PEM it presented: a PNode's is renewed from it)."""

    role: str
    name: str = ""
    certificate: bytes = field(default=b"", repr=False)

    def __str__(self) -> str:
        return f"{self.role} {self.name}".strip()


ANONYMOUS_CALLER = Caller(ANONYMOUS)


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str]
    anonymous: str = "never"  # "always", "public" (while public reads are on) or "never"


def _rule(*roles: str, anonymous: str = "never") -> Rule:
    return Rule(frozenset(roles), anonymous)


RESEARCH = _rule(OPERATOR, RESEARCHER)
PUBLIC_READ = _rule(OPERATOR, RESEARCHER, anonymous="public")
OPERATOR_ONLY = _rule(OPERATOR)
FROM_ORCHESTRATOR = _rule(ORCHESTRATOR)
FROM_PNODE = _rule(PNODE)

_ORCH = "dcnr.v2.OrchestratorService/"
_NODES = "dcnr.v2.NodeManagementService/"
_STORAGE = "dcnr.v2.StorageService/"
_VNODE = "dcnr.v2.VNodeService/"
_PNODE = "dcnr.v2.PNodeService/"
_RELAY = "dcnr.v2.RelayService/"

RULES: dict[str, Rule] = {
    # the orchestrator's public service
    _ORCH + "CreateNetwork": RESEARCH,
    _ORCH + "UpdateNetwork": RESEARCH,
    _ORCH + "DeleteNetwork": RESEARCH,
    _ORCH + "GetNetwork": PUBLIC_READ,
    _ORCH + "ListNetworks": PUBLIC_READ,
    _ORCH + "ForwardNetwork": RESEARCH,
    _ORCH + "TrainNetwork": RESEARCH,
    _ORCH + "ValidateNetwork": RESEARCH,
    _ORCH + "ChatNetwork": RESEARCH,
    _ORCH + "CreateTrainSession": RESEARCH,
    _ORCH + "StartTrainSession": RESEARCH,
    _ORCH + "SuspendTrainSession": RESEARCH,
    _ORCH + "ListTrainSessions": PUBLIC_READ,
    _ORCH + "DeleteTrainSession": RESEARCH,
    _ORCH + "ListenTrainSession": PUBLIC_READ,
    _ORCH + "GetTrainSessionHistory": PUBLIC_READ,
    _ORCH + "CreateVocabulary": RESEARCH,
    _ORCH + "GetVocabulary": RESEARCH,
    _ORCH + "ListVocabularies": PUBLIC_READ,
    _ORCH + "DeleteVocabulary": RESEARCH,
    _ORCH + "CreateDataset": RESEARCH,
    _ORCH + "GetDataset": RESEARCH,
    _ORCH + "ExploreDataset": RESEARCH,
    _ORCH + "ListDatasets": PUBLIC_READ,
    _ORCH + "DeleteDataset": RESEARCH,
    _ORCH + "SplitDataset": RESEARCH,
    _ORCH + "InspectNetwork": RESEARCH,
    _ORCH + "ExportNetwork": RESEARCH,
    _ORCH + "ImportNetwork": RESEARCH,
    _ORCH + "CloneNetwork": RESEARCH,
    _ORCH + "Health": _rule(*ROLES, anonymous="always"),
    _ORCH + "ListPNodes": RESEARCH,  # PNode addresses are the volunteers': not public
    _ORCH + "TrustPNode": OPERATOR_ONLY,
    _ORCH + "ReleasePNode": OPERATOR_ONLY,
    _ORCH + "ListValidationEvents": PUBLIC_READ,  # PNode ids and verdicts, no addresses: the audit trail is public
    _ORCH + "ListRelays": RESEARCH,  # addresses: not public
    _ORCH + "ListCheckpoints": RESEARCH,
    _ORCH + "ExportCheckpoint": RESEARCH,
    _ORCH + "CreateToken": OPERATOR_ONLY,
    _ORCH + "ListTokens": OPERATOR_ONLY,
    _ORCH + "RevokeToken": OPERATOR_ONLY,
    # membership: anyone may enrol a key (the network is permissionless); the rest needs the certificate
    _NODES + "IssueCertificate": _rule(PNODE, OPERATOR, anonymous="always"),  # a relay's: operators only
    _NODES + "RegisterPNode": FROM_PNODE,
    _NODES + "UnregisterPNode": _rule(PNODE, OPERATOR),
    _NODES + "HeartbeatPNode": FROM_PNODE,
    _NODES + "ReportProgress": FROM_PNODE,
    _NODES + "AssignRelay": FROM_PNODE,
    _NODES + "RegisterRelay": _rule(RELAY),
    _NODES + "HeartbeatRelay": _rule(RELAY),
    _RELAY + "Attach": FROM_PNODE,
    _STORAGE + "GetUploadTarget": FROM_PNODE,
    _STORAGE + "GetDownloadTarget": FROM_PNODE,
    _STORAGE + "PutBlob": FROM_PNODE,
    _STORAGE + "GetBlob": FROM_PNODE,
    # a PNode's services: management from the orchestrator, hops from PNodes (and inputs from the orchestrator)
    _VNODE + "PlaceNetwork": FROM_ORCHESTRATOR,
    _VNODE + "BeginRun": FROM_ORCHESTRATOR,
    _VNODE + "ReceiveTrainRequest": _rule(ORCHESTRATOR, PNODE),
    _VNODE + "ReceiveTrainResponse": FROM_PNODE,
    _VNODE + "CheckFinite": FROM_ORCHESTRATOR,
    _VNODE + "ApplyUpdate": FROM_ORCHESTRATOR,
    _VNODE + "CollectEvidence": FROM_ORCHESTRATOR,
    _VNODE + "Verify": FROM_ORCHESTRATOR,
    _VNODE + "ResetToStep": FROM_ORCHESTRATOR,
    _VNODE + "Load": FROM_ORCHESTRATOR,
    _VNODE + "Save": FROM_ORCHESTRATOR,
    _VNODE + "Health": _rule(ORCHESTRATOR, PNODE),
    _PNODE + "ListLocalVNodes": FROM_ORCHESTRATOR,
    _PNODE + "DropLocalVNode": FROM_ORCHESTRATOR,
    _PNODE + "InspectNetwork": FROM_ORCHESTRATOR,
}


def allowed(method: str, caller: Caller, public_reads: bool = True) -> bool:
    """Whether `caller` may call `method` ("package.Service/Method"); a method without a rule: nobody."""
    rule = RULES.get(method)
    if rule is None:
        return False
    if caller.role == ANONYMOUS:
        return rule.anonymous == "always" or (rule.anonymous == "public" and public_reads)
    return caller.role in rule.roles


def check(method: str, caller: Caller, public_reads: bool = True) -> None:
    """Nothing if allowed; Unauthenticated for an anonymous caller that needs a credential, else
    PermissionDenied naming the role."""
    if allowed(method, caller, public_reads):
        return
    name = method.rpartition("/")[2]
    if caller.role == ANONYMOUS:
        raise Unauthenticated(f"{name} needs a credential: pass a token (--config with a token, or DCNR_TOKEN)")
    raise PermissionDenied(f"{name} is not allowed for role {caller.role}")
