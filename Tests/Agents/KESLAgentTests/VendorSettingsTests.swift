import AgentInterface
import ChildProcess
import IntegrationModel
import KESLAgent
import TetherTestSupport
import Testing

@Suite("The vendor's settings files and command line")
struct VendorSettingsTests {
    @Test("INI is read tolerantly: with or without [General], names in any case, any digits after item_, comments and unknown keys")
    func tolerantReading() throws {
        let text = """
            ; printed by an older agent
            # another comment
            port=9443
            USECLIENTPINNEDCERTIFICATE = yes
            SomethingNew=42
            [eventtransfersettings]
            PingPeriod=120
            [ENDPOINTS.ITEM_7]
            Address=10.0.0.2
            Port=8082
            [Endpoints.item_0000001]
            address=10.0.0.1
            port=8081
            """
        let ini = try VendorINI(parsing: text)
        let edr = try VendorSettings.read(ini, integration: .edr, task: "KATAEDR")
        #expect(edr[SettingPath.edr.port] == .int(9443))
        #expect(edr[SettingPath.edr.mutualAuthentication] == .bool(true))
        let ndr = try VendorSettings.read(ini, integration: .ndr, task: "KATANDR")
        #expect(ndr[SettingPath.ndr.pingPeriod] == .int(120))
        #expect(ndr[SettingPath.ndr.endpoints] == .endpoints([Endpoint(address: "10.0.0.1", port: 8081), Endpoint(address: "10.0.0.2", port: 8082)]),
                "items in the order of their numbers")
        let general = try VendorINI(parsing: "[General]\nPort=1\n[General]\nAddress=h\n")
        #expect(general.value("port") == "1" && general.value("ADDRESS") == "h")
    }

    @Test("What is not INI, or a value of the wrong kind, is refused with the line or the key")
    func refusals() throws {
        let notINI = #expect(throws: VendorINI.ParseError.self) { try VendorINI(parsing: "Port=1\n<html>\n") }
        #expect(notINI?.description.hasPrefix("line 2 is not INI") == true)
        let wrong = #expect(throws: VendorSettings.ReadError.self) {
            try VendorSettings.read(try VendorINI(parsing: "Port=abc\n"), integration: .edr, task: "KATAEDR")
        }
        #expect(wrong?.description == "KATAEDR: Port=abc is not a number")
        let item = #expect(throws: VendorSettings.ReadError.self) {
            try VendorSettings.read(try VendorINI(parsing: "[Servers.item_0]\nAddress=x\n"), integration: .sandbox, task: "KATASandbox")
        }
        #expect(item?.description.contains("needs Address and a numeric Port") == true)
    }

    @Test("A written file reads back to the same values: Yes/No, sections, numbered items")
    func roundTrip() throws {
        let values: [(path: SettingPath, value: SettingValue)] = [
            (SettingPath.ndr.mutualAuthentication, .bool(true)), (SettingPath.ndr.pingPeriod, .int(90)),
            (SettingPath.ndr.endpoints, .endpoints([Endpoint(address: "fd00::1", port: 8081), Endpoint(address: "10.0.0.9", port: 8082)])),
        ]
        let text = VendorSettings.file(setting: values).rendered()
        #expect(text.contains("UseClientPinnedCertificate=Yes") && text.contains("[EventTransferSettings]") && text.contains("[Endpoints.item_0001]"))
        let read = try VendorSettings.read(try VendorINI(parsing: text), integration: .ndr, task: "KATANDR")
        for (path, value) in values { #expect(read[path] == value, "\(path)") }
    }

    @Test("Task names come from one table that an override changes")
    func taskNames() throws {
        let names = try VendorTaskNames(overrides: "edr=KATAEDR2,behaviorDetection=BehaviorDetection")
        #expect(names.task(.edr) == "KATAEDR2" && names.task(.ndr) == "KATANDR" && names.behaviorDetection == "BehaviorDetection")
        #expect(throws: KESLError.self) { try VendorTaskNames(overrides: "xdr=X") }
    }

    @Test("A kesl-control that hangs is stopped at the per-call timeout, with the command named")
    func timeout() throws {
        let standIn = try KESLStandIn()
        try standIn.hang("--get-task-state")
        let control = KESLControl(executable: standIn.executable, timeout: 1)
        let agent = try KESLAgent(stateDirectory: try TemporaryDirectory("kesl-timeout").path, control: control)
        let error = #expect(throws: KESLError.self) { try agent.state() }
        #expect(error?.description.contains("kesl-control --get-task-state KATAEDR: it did not finish within 1 s and was stopped") == true, "\(String(describing: error))")
    }

    @Test("A child that writes a lot to both outputs does not deadlock, and its exit status is kept")
    func childOutputs() throws {
        let outcome = try ChildProcess.run("/bin/sh", ["-c", "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; exit 3"], timeout: 10)
        #expect(outcome.status == 3)
        #expect(outcome.standardOutput.count == 300_000 && outcome.standardError.count == 300_000)
        #expect(throws: ChildProcessError.self) { try ChildProcess.run("/bin/sh", ["-c", "head -c 3000000 /dev/zero"], timeout: 10) }
    }
}
