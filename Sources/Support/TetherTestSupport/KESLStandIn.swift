import Foundation

/// A stand-in for the vendor's `kesl-control`, written from the contract in
/// docs/architecture.md ("The vendor's agent") and no further: per-task settings as INI in and
/// out, task start/stop and state, certificate add/remove/query, and the vendor's refusals (a
/// task with two-way authentication on and no client certificate does not start; the
/// certificate of a running task is not removed; an invalid value rejects the whole file). Its
/// state is a JSON file in its own temporary folder; every call is logged; `fail(_:)` makes a
/// chosen command fail and `hang(_:)` one hang (test controls, not vendor behaviour).
package final class KESLStandIn: @unchecked Sendable {
    package let folder: TemporaryDirectory
    /// The program to give tether as `--kesl-control`.
    package let executable: String

    package init() throws {
        folder = try TemporaryDirectory("kesl-standin")
        let script = try folder.write("kesl-control.py", Self.script)
        executable = folder.url.appending(path: "kesl-control").path
        // Debian's python3 directly, isolated and without site packages (-I -S): 30 ms a call instead
        // of 110 ms through a version manager's shim; a vendor call costs little, as the real one does.
        let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3 -I -S" : "python3"
        let wrapper = "#!/bin/sh\nKESL_STANDIN_STATE='\(folder.path)' exec \(python) '\(script)' \"$@\"\n"
        try writeExecutable(executable, Data(wrapper.utf8))
    }

    /// Runs the stand-in as an administrator would.
    @discardableResult
    package func run(_ arguments: String...) throws -> ProgramResult {
        try runProgram(executable, arguments)
    }

    /// Makes every call whose arguments start with `command` (`--start-task KATANDR`) fail
    /// with a message, until `fail(nil)`.
    package func fail(_ command: String?) throws {
        let file = folder.url.appending(path: "fail")
        if let command { try Data(command.utf8).write(to: file) } else { try? FileManager.default.removeItem(at: file) }
    }

    /// Makes the next call whose arguments start with `command` do its work and then fail anyway
    /// (exit 1), once: a vendor command that lies about failing.
    package func failAfter(_ command: String?) throws {
        let file = folder.url.appending(path: "fail-after")
        if let command { try Data(command.utf8).write(to: file) } else { try? FileManager.default.removeItem(at: file) }
    }

    /// Makes every call whose arguments start with `command` wait three seconds before it does
    /// its work (a slow or hung vendor command), until `hang(nil)`.
    package func hang(_ command: String?) throws {
        let file = folder.url.appending(path: "hang")
        if let command { try Data(command.utf8).write(to: file) } else { try? FileManager.default.removeItem(at: file) }
    }

    /// Every call's arguments, in order.
    package var calls: [[String]] {
        guard let data = FileManager.default.contents(atPath: folder.url.appending(path: "calls.log").path) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONDecoder().decode([String].self, from: Data($0.utf8))
        }
    }

    /// Forgets the calls made so far.
    package func clearCalls() {
        try? FileManager.default.removeItem(at: folder.url.appending(path: "calls.log"))
    }

    static let script = #"""
        import json, os, re, subprocess, sys

        STATE = os.environ["KESL_STANDIN_STATE"]
        STATE_FILE = os.path.join(STATE, "state.json")
        TASKS = {"kataedr": "KATAEDR", "katandr": "KATANDR", "katasandbox": "KATASandbox", "behavior_detection": "Behavior_Detection"}
        GROUPS = {"kataedr": "KATAEDR", "katandr": "KATANDR", "sandbox": "KATASandbox"}
        COMMON = {"ConnectionTimeout": "10", "RequestTimeout": "10"}
        INITIAL = {
            "KATAEDR": {"general": dict({"Mode": "kata", "Address": "127.0.0.1", "Port": "443", "UseClientPinnedCertificate": "No",
                                          "SynchronizationPeriod": "5", "MaximumDataTransferTime": "30", "UseRequestCountLimits": "Yes",
                                          "MaximumNumberOfEventsInHour": "3000", "EventLimitExceededPercentage": "15",
                                          "EnableTelemetry": "Yes", "TraceLevel": "Info"}, **COMMON),
                        "sections": {}, "lists": {}, "state": "Stopped"},
            "KATANDR": {"general": dict({"UseClientPinnedCertificate": "No", "SynchronizationPeriod": "5"}, **COMMON),
                        "sections": {"EventTransferSettings": {"MaximumDataTransferTime": "30", "UseRequestCountLimits": "Yes",
                                                               "MaximumNumberOfEventsInHour": "3000", "EventLimitExceededPercentage": "15",
                                                               "MaximumNumberOfEventsInPackage": "1024", "PingPeriod": "450"}},
                        "lists": {"Endpoints": [{"Address": "127.0.0.1", "Port": "8081"}]}, "state": "Stopped"},
            "KATASandbox": {"general": dict({"UseClientCertificate": "No"}, **COMMON),
                            "sections": {"SandboxTransferSettings": {"SandboxQueue": "1024"}},
                            "lists": {"Servers": [{"Address": "127.0.0.1", "Port": "443"}]}, "state": "Stopped"},
            "Behavior_Detection": {"general": {}, "sections": {}, "lists": {}, "state": "Started"},
        }
        BOOLEAN = {"useclientpinnedcertificate", "useclientcertificate", "userequestcountlimits", "enabletelemetry"}
        NUMBER = {"port", "synchronizationperiod", "connectiontimeout", "requesttimeout", "maximumdatatransfertime",
                  "maximumnumberofeventsinhour", "eventlimitexceededpercentage", "maximumnumberofeventsinpackage", "pingperiod", "sandboxqueue"}

        def fail(message, code=1):
            sys.stderr.write(message + "\n")
            sys.exit(code)

        def load():
            if not os.path.exists(STATE_FILE):
                return {"tasks": json.loads(json.dumps(INITIAL)), "certificates": {}}
            with open(STATE_FILE) as f:
                return json.load(f)

        def save(state):
            with open(STATE_FILE + ".new", "w") as f:
                json.dump(state, f)
            os.replace(STATE_FILE + ".new", STATE_FILE)

        def task_name(name):
            task = TASKS.get(name.lower())
            if task is None:
                fail("Unknown task: " + name)
            return task

        def check(key, value):
            lowered = key.lower()
            if lowered in BOOLEAN and value.lower() not in ("yes", "no"):
                fail("Invalid value '%s' for %s: expected Yes or No" % (value, key))
            if lowered in NUMBER:
                if not re.fullmatch(r"[0-9]+", value) or int(value) <= 0 or (lowered == "port" and int(value) > 65535):
                    fail("Invalid value '%s' for %s" % (value, key))
            if lowered == "address" and (not value or " " in value):
                fail("Invalid value '%s' for Address" % value)
            if lowered == "mode" and value not in ("kata", "expert-onprem"):
                fail("Invalid value '%s' for Mode" % value)

        def put(entries, key, value):
            for existing in list(entries):
                if existing.lower() == key.lower():
                    entries[existing] = value
                    return
            entries[key] = value

        def apply_settings(task, general, sections, lists):
            for key, value in general:
                check(key, value)
            for section, entries in sections.items():
                for key, value in entries:
                    check(key, value)
            for name, items in lists.items():
                for item in items:
                    for key, value in item.items():
                        check(key, value)
            for key, value in general:
                put(task["general"], key, value)
            for section, entries in sections.items():
                target = next((task["sections"][s] for s in task["sections"] if s.lower() == section.lower()), None)
                if target is None:
                    target = task["sections"].setdefault(section, {})
                for key, value in entries:
                    put(target, key, value)
            for name, items in lists.items():
                existing = next((l for l in task["lists"] if l.lower() == name.lower()), name)
                task["lists"][existing] = [{"Address": i.get("Address", ""), "Port": i.get("Port", "")} for i in items]

        def parse_ini(text):
            general, sections, lists, current = [], {}, {}, None
            for number, raw in enumerate(text.splitlines(), 1):
                line = raw.strip()
                if not line or line[0] in ";#":
                    continue
                if line.startswith("[") and line.endswith("]"):
                    name = line[1:-1].strip()
                    match = re.fullmatch(r"(endpoints|servers)\.item_([0-9]+)", name, re.I)
                    if match:
                        listname = "Endpoints" if match.group(1).lower() == "endpoints" else "Servers"
                        item = {}
                        lists.setdefault(listname, []).append((int(match.group(2)), item))
                        current = ("item", item)
                    elif name.lower() == "general":
                        current = None
                    else:
                        current = ("section", sections.setdefault(name, []))
                    continue
                if "=" not in line:
                    fail("Line %d is not Key=Value: %s" % (number, line))
                key, value = [p.strip() for p in line.split("=", 1)]
                if current is None:
                    general.append((key, value))
                elif current[0] == "item":
                    put(current[1], key, value)
                else:
                    current[1].append((key, value))
            return general, sections, {n: [i for _, i in sorted(items, key=lambda x: x[0])] for n, items in lists.items()}

        def print_settings(name, task):
            lines = ["; settings of task " + name]
            if name == "KATAEDR":
                lines.append("[General]")
            lines += ["%s=%s" % kv for kv in task["general"].items()]
            for section, entries in task["sections"].items():
                lines += ["", "[%s]" % section] + ["%s=%s" % kv for kv in entries.items()]
            for listname, items in task["lists"].items():
                for index, item in enumerate(items):
                    lines += ["", "[%s.item_%04d]" % (listname, index)] + ["%s=%s" % kv for kv in item.items()]
            print("\n".join(lines))

        def two_way(task_name_, task):
            key = "UseClientCertificate" if task_name_ == "KATASandbox" else "UseClientPinnedCertificate"
            value = next((v for k, v in task["general"].items() if k.lower() == key.lower()), "No")
            return value.lower() == "yes"

        def describe(pem):
            out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-subject", "-issuer", "-startdate", "-enddate", "-nameopt", "RFC2253"],
                                 input=pem, capture_output=True)
            if out.returncode != 0:
                fail("Not a certificate")
            fields = dict(line.split("=", 1) for line in out.stdout.decode().splitlines() if "=" in line)
            return {"serial": fields["serial"], "subject": fields["subject"], "issuer": fields["issuer"],
                    "from": fields["notBefore"], "to": fields["notAfter"]}

        def main(argv):
            with open(os.path.join(STATE, "calls.log"), "a") as log:
                log.write(json.dumps(argv) + "\n")
            hanging = os.path.join(STATE, "hang")
            if os.path.exists(hanging) and argv[:len(open(hanging).read().split())] == open(hanging).read().split():
                import time
                time.sleep(3)
            failing = os.path.join(STATE, "fail")
            if os.path.exists(failing):
                command = open(failing).read().split()
                if argv[:len(command)] == command:
                    fail("Error: %s failed (the stand-in was told to fail it)" % " ".join(command))
            if not argv:
                fail("Usage: kesl-control COMMAND")
            state = load()
            command, rest = argv[0], argv[1:]
            if command == "--get-settings" and len(rest) == 1:
                name = task_name(rest[0])
                print_settings(name, state["tasks"][name])
            elif command == "--set-settings" and len(rest) >= 2:
                name = task_name(rest[0])
                if rest[1] == "--file" and len(rest) == 3:
                    with open(rest[2]) as f:
                        general, sections, lists = parse_ini(f.read())
                else:
                    general, sections = [], {}
                    for pair in rest[1:]:
                        if "=" not in pair:
                            fail("Expected Key=Value: " + pair)
                        key, value = pair.split("=", 1)
                        if "." in key:
                            section, key = key.split(".", 1)
                            sections.setdefault(section, []).append((key, value))
                        else:
                            general.append((key, value))
                    lists = {}
                apply_settings(state["tasks"][name], general, sections, lists)
                save(state)
            elif command == "--get-task-state" and len(rest) == 1:
                name = task_name(rest[0])
                print("Name: %s\nState: %s" % (name, state["tasks"][name]["state"]))
            elif command in ("--start-task", "--stop-task") and len(rest) == 1:
                name = task_name(rest[0])
                task = state["tasks"][name]
                if command == "--start-task":
                    group = {v: k for k, v in GROUPS.items()}.get(name)
                    if group and two_way(name, task) and "client" not in state["certificates"].get(group, {}):
                        fail("Cannot start task %s: two-way authentication is on and no client certificate is installed" % name)
                    task["state"] = "Started"
                else:
                    task["state"] = "Stopped"
                save(state)
            else:
                match = re.fullmatch(r"--(add|remove|query)-(kataedr|katandr|sandbox)-(server|client)-certificate", command)
                if not match:
                    fail("Unknown command: " + " ".join(argv))
                action, group, role = match.groups()
                slots = state["certificates"].setdefault(group, {})
                if action == "query":
                    certificate = slots.get(role)
                    if certificate is None:
                        fail("No %s certificate is installed for %s" % (role, GROUPS[group]))
                    print("Serial number: %s\nSubject: %s\nIssuer: %s\nValid from: %s\nValid to: %s"
                          % (certificate["serial"], certificate["subject"], certificate["issuer"], certificate["from"], certificate["to"]))
                elif action == "remove":
                    if state["tasks"][GROUPS[group]]["state"] == "Started":
                        fail("Cannot remove the %s certificate of task %s while it runs: stop the task first" % (role, GROUPS[group]))
                    slots.pop(role, None)
                    save(state)
                else:
                    if len(rest) != 1:
                        fail("Usage: kesl-control %s FILE" % command)
                    data = open(rest[0], "rb").read()
                    if role == "server":
                        slots["server"] = describe(data)
                    else:
                        password = sys.stdin.readline().rstrip("\n")
                        out = subprocess.run(["openssl", "pkcs12", "-in", rest[0], "-clcerts", "-nokeys", "-passin", "stdin"],
                                             input=(password + "\n").encode(), capture_output=True)
                        if out.returncode != 0:
                            fail("Cannot open the container: wrong password or not PKCS#12")
                        slots["client"] = describe(out.stdout)
                    save(state)
            failing_after = os.path.join(STATE, "fail-after")
            if os.path.exists(failing_after):
                command = open(failing_after).read().split()
                if argv[:len(command)] == command:
                    os.remove(failing_after)
                    fail("Error: %s failed after making its change (the stand-in was told to)" % " ".join(command))

        main(sys.argv[1:])
        """#
}
