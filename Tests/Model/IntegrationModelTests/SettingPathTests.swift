import IntegrationModel
import Testing

@Suite("Typed setting paths")
struct SettingPathTests {
    /// Every path the typed constants offer.
    private func typedPaths() -> [SettingPath] {
        func stored(_ value: Any) -> [SettingPath] { Mirror(reflecting: value).children.compactMap { $0.value as? SettingPath } }
        var paths: [SettingPath] = [.behaviorDetection] + stored(SettingPath.proxy)
        paths += stored(SettingPath.edr) + stored(SettingPath.ndr) + stored(SettingPath.sandbox)
        for integration in Integration.allCases {
            paths += stored(SettingPath.common(integration))
            if let transfer = SettingPath.eventTransfer(integration) { paths += stored(transfer) }
        }
        return paths
    }

    @Test("The typed constants and the catalog name exactly the same settings")
    func constantsMatchTheCatalog() {
        let typed = typedPaths()
        let catalog = SettingCatalog.scopes.flatMap { SettingCatalog.paths($0).map(\.path) }
        for path in typed { #expect(SettingCatalog.field(path) != nil, "\(path) is not in the catalog") }
        #expect(Set(typed) == Set(catalog), "missing: \(Set(catalog).subtracting(typed).map(\.description).sorted())")
        #expect(SettingPath.edr.port.description == "edr.port")
        #expect(SettingPath.ndr.connectionTimeout == SettingPath.common(.ndr).connectionTimeout)
        #expect(SettingPath.eventTransfer(.sandbox) == nil, "Sandbox has no event transfer settings")
    }

    @Test("Paths named as text are found only when the catalog has them")
    func parsing() {
        #expect(SettingCatalog.path(named: "edr.port") == SettingPath.edr.port)
        #expect(SettingCatalog.path(named: "proxy.address") == SettingPath.proxy.address)
        #expect(SettingCatalog.path(named: "edr.prot") == nil)
        #expect(SettingCatalog.path(named: "sandbox.telemetry") == nil, "only EDR has telemetry")
        #expect(SettingCatalog.path(.integration(.ndr), "pingPeriod") == SettingPath.ndr.pingPeriod)
        #expect(SettingPath.common(.edr).enabled.isTaskState && !SettingPath.edr.port.isTaskState)
    }
}
