"""Scans a TLS listener on 127.0.0.1 with sslyze and prints one JSON
object: the protocol versions it accepts, every accepted cipher suite with
whether it is weak, and what it does about renegotiation.

A suite is weak unless it is a TLS 1.3 suite, or a TLS 1.2 suite with an
ephemeral (EC)DHE key exchange and an AEAD cipher (GCM, ChaCha20-Poly1305,
CCM) of at least 128 bits: that excludes RC4, DES and 3DES, NULL, export
and anonymous suites, CBC with its padding oracles, and static RSA key
exchange without forward secrecy.

Usage: tls_scan.py PORT SERVER_NAME
"""

import json
import sys

from sslyze import (
    ScanCommand,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

PROTOCOLS = {
    "SSL 2.0": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "SSL 3.0": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "TLS 1.0": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "TLS 1.1": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "TLS 1.2": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "TLS 1.3": ScanCommand.TLS_1_3_CIPHER_SUITES,
}

ATTRIBUTES = {
    "SSL 2.0": "ssl_2_0_cipher_suites",
    "SSL 3.0": "ssl_3_0_cipher_suites",
    "TLS 1.0": "tls_1_0_cipher_suites",
    "TLS 1.1": "tls_1_1_cipher_suites",
    "TLS 1.2": "tls_1_2_cipher_suites",
    "TLS 1.3": "tls_1_3_cipher_suites",
}


def is_weak(protocol, suite):
    name = suite.name
    if protocol == "TLS 1.3":
        return False
    forward_secret = "_ECDHE_" in name or "_DHE_" in name
    aead = any(mode in name for mode in ("_GCM_", "CHACHA20_POLY1305", "_CCM"))
    return not (forward_secret and aead and suite.key_size >= 128)


def main():
    port, server_name = int(sys.argv[1]), sys.argv[2]
    location = ServerNetworkLocation(
        hostname=server_name, port=port, ip_address="127.0.0.1"
    )
    request = ServerScanRequest(
        server_location=location,
        scan_commands=set(PROTOCOLS.values()) | {ScanCommand.SESSION_RENEGOTIATION},
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    report = {"protocols": {}, "suites": [], "renegotiation": None, "errors": []}
    for result in scanner.get_results():
        if result.scan_status != ServerScanStatusEnum.COMPLETED:
            report["errors"].append(f"connectivity: {result.connectivity_error_trace}")
            continue
        scans = result.scan_result
        for protocol, attribute in ATTRIBUTES.items():
            attempt = getattr(scans, attribute)
            if attempt.result is None:
                report["errors"].append(f"{protocol}: {attempt.error_reason}")
                continue
            accepted = attempt.result.accepted_cipher_suites
            report["protocols"][protocol] = bool(accepted)
            for accepted_suite in accepted:
                suite = accepted_suite.cipher_suite
                report["suites"].append(
                    {
                        "protocol": protocol,
                        "name": suite.name,
                        "weak": is_weak(protocol, suite),
                    }
                )
        renegotiation = scans.session_renegotiation
        if renegotiation.result is None:
            report["errors"].append(f"renegotiation: {renegotiation.error_reason}")
        else:
            report["renegotiation"] = {
                "secure": renegotiation.result.supports_secure_renegotiation,
                "client_initiated_dos": renegotiation.result.is_vulnerable_to_client_renegotiation_dos,
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
