// ATT&CK links: tactic names as Sigma tags spell them -> tactic ids; technique ids ->
// their pages (T1059.001 -> /techniques/T1059/001/).

const TACTICS = {
  "reconnaissance": "TA0043", "resource-development": "TA0042", "initial-access": "TA0001",
  "execution": "TA0002", "persistence": "TA0003", "privilege-escalation": "TA0004",
  "defense-evasion": "TA0005", "credential-access": "TA0006", "discovery": "TA0007",
  "lateral-movement": "TA0008", "collection": "TA0009", "command-and-control": "TA0011",
  "exfiltration": "TA0010", "impact": "TA0040",
};

export function tacticUrl(name) {
  const id = TACTICS[String(name).toLowerCase().replace(/_/g, "-")];
  return id ? `https://attack.mitre.org/tactics/${id}/` : null;
}

export function techniqueUrl(id) {
  const m = /^T(\d{4})(?:\.(\d{3}))?$/i.exec(String(id));
  if (!m) return null;
  return `https://attack.mitre.org/techniques/T${m[1]}/${m[2] ? `${m[2]}/` : ""}`;
}
