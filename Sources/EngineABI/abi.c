/* The engine ABI is a header only; this file gives SwiftPM a target to build. */
#include "metacrypt_engine.h"
