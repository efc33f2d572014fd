import Logging
import ServiceLifecycle
import UnixSignals

/// Logs the signal that starts a graceful stop (the ServiceGroup acts on it; this only says
/// which one arrived). First in the group, so it stops last and sees the signal.
public struct SignalLog: Service {
    let signals: [UnixSignal]
    let logger: Logger

    public init(signals: [UnixSignal], logger: Logger) {
        self.signals = signals
        self.logger = logger
    }

    public func run() async {
        let signals = await UnixSignalsSequence(trapping: self.signals)
        let logger = self.logger
        await cancelWhenGracefulShutdown {
            for await signal in signals {
                logger.info("received \(signal), stopping")
            }
        }
    }
}
