/* libargon2 for Swift. */
#ifndef METACRYPT_CARGON2_H
#define METACRYPT_CARGON2_H
#include <argon2.h>
#endif
