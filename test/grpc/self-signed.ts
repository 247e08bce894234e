// A self-signed TLS certificate made at test time with openssl (EC P-256, one day), valid for
// `localhost` and 127.0.0.1: the TLS tests' server certificate and, as its own CA, the client's root.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";

/** Without openssl there is no way to make a certificate here: TLS tests skip, saying so. */
export const hasOpenssl = spawnSync("openssl", ["version"]).status === 0;

/** Writes cert.pem and key.pem into `dir`; their paths and contents. */
export function makeSelfSignedCert(dir: string) {
  const certFile = join(dir, "cert.pem");
  const keyFile = join(dir, "key.pem");
  const made = spawnSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"],
      ...["-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=localhost"],
      ...["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
    ],
    { encoding: "utf8" },
  );
  if (made.status !== 0) throw new Error(`openssl could not make a certificate: ${made.stderr}`);
  return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
}
