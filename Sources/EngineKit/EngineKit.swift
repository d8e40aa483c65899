import EngineABI
