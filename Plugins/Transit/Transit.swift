import EngineKit
