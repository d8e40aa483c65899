/* libcurl for Swift: the headers, and typed forwards for the variadic setopt/getinfo. */
#ifndef METACRYPT_CCURL_H
#define METACRYPT_CCURL_H
#include <curl/curl.h>

CURLcode mc_curl_setopt_long(CURL *curl, CURLoption option, long value);
CURLcode mc_curl_setopt_pointer(CURL *curl, CURLoption option, void *value);
CURLcode mc_curl_setopt_string(CURL *curl, CURLoption option, const char *value);
CURLcode mc_curl_setopt_write(CURL *curl, curl_write_callback callback);
CURLcode mc_curl_getinfo_long(CURL *curl, CURLINFO info, long *value);
#endif
