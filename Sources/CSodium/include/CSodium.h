/* libsodium for Swift. */
#ifndef METACRYPT_CSODIUM_H
#define METACRYPT_CSODIUM_H
#include <sodium.h>
#endif
