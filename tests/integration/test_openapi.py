#!/usr/bin/python3
"""docs/openapi.yaml against the real server: every route the document lists is called on a
running `sacgate all` (and on an admin without a router, and on a router's probe endpoint),
success and error cases, and every answer must be described there: its status listed for that
path and method, its media type, its required headers (Retry-After, WWW-Authenticate), and its
JSON body valid against the documented schema (OpenAPI 3.0 schemas turned into JSON Schema draft
4 and checked with python3-jsonschema). Also checks the document itself (structure, references,
schemas, operation ids, path parameters), that it lists exactly the routes of admin/adm_http.c
with their roles, and that each role it names is what the server enforces (401 without a token,
403 with a token lacking the role, neither with a token holding just that role).

SGTEST_OPENAPI=FILE checks another copy of the document (to see this test fail on a wrong one).
"""

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, wait_until  # noqa: E402

try:
    import jsonschema
    import yaml
except ImportError as e:  # scripts/deps.sh installs both
    sys.stderr.write("test_openapi: %s: install Debian's python3-jsonschema and python3-yaml "
                     "(scripts/deps.sh does)\n" % e)
    sys.exit(1)

SPEC_PATH = os.environ.get("SGTEST_OPENAPI") or os.path.join(sgtest.REPO, "docs", "openapi.yaml")
ADM_HTTP = os.path.join(sgtest.REPO, "admin", "adm_http.c")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ROLES = ("none", "any", "registry-read", "registry-write", "service", "admin")

# OpenAPI 3.0.3 Schema Object keywords (anything else there is a typo the tools would ignore)
SCHEMA_KEYS = {
    "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength",
    "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties",
    "required", "enum", "type", "allOf", "oneOf", "anyOf", "not", "items", "properties",
    "additionalProperties", "description", "format", "default", "nullable", "discriminator",
    "readOnly", "writeOnly", "xml", "externalDocs", "example", "deprecated", "$ref",
}
OPENAPI_ONLY = {"nullable", "discriminator", "readOnly", "writeOnly", "xml", "externalDocs", "example",
                "deprecated"}

# (path template, method) -> set of statuses seen, over every test class of this file
COVERED = {}

# the consumer-group commits: the same body, one per log
COMMITS = ("/v1/telemetry/groups/{group}/commit", "/v1/feedback/groups/{group}/commit")


# --------------------------------------------------------------------------------------------
# the document


class Spec:
    """docs/openapi.yaml, its schemas as JSON Schema, and the check of one answer against it."""

    def __init__(self, path):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.path = path

    def resolve(self, node):
        """Follow a $ref (local ones only) to what it names."""
        seen = set()
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                raise AssertionError("%s: cannot resolve $ref %r" % (self.path, ref))
            seen.add(ref)
            cur = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(cur, dict) or part not in cur:
                    raise AssertionError("%s: $ref %r does not resolve" % (self.path, ref))
                cur = cur[part]
            node = cur
        return node

    def json_schema(self, node, stack=()):
        """An OpenAPI 3.0 Schema Object as JSON Schema draft 4: $refs inlined, `nullable` as a
        "null" type, keywords JSON Schema does not know dropped."""
        if isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if ref in stack:
                raise AssertionError("%s: recursive schema %r is not supported here" % (self.path, ref))
            return self.json_schema(self.resolve(node), stack + (ref,))
        if not isinstance(node, dict):
            raise AssertionError("%s: a schema must be a mapping, got %r" % (self.path, node))
        out = {}
        for k, v in node.items():
            if k in OPENAPI_ONLY or k.startswith("x-"):
                continue
            if k == "properties":
                out[k] = {name: self.json_schema(s, stack) for name, s in v.items()}
            elif k in ("items", "not") or (k == "additionalProperties" and isinstance(v, dict)):
                out[k] = self.json_schema(v, stack)
            elif k in ("allOf", "anyOf", "oneOf"):
                out[k] = [self.json_schema(s, stack) for s in v]
            else:
                out[k] = v
        if node.get("nullable"):
            if "type" in out:
                out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = list(out["enum"]) + [None]
        return out

    def operation(self, template, method):
        item = self.doc.get("paths", {}).get(template)
        if item is None:
            raise AssertionError("%s has no path %s" % (self.path, template))
        op = item.get(method.lower())
        if op is None:
            raise AssertionError("%s has no %s %s" % (self.path, method, template))
        return op

    def operations(self):
        for template, item in self.doc.get("paths", {}).items():
            for m in METHODS:
                if m in item:
                    yield template, m.upper(), item[m]

    def parameters(self, template, method):
        """Parameters of an operation: the path item's, overridden by the operation's."""
        item = self.doc["paths"][template]
        out = {}
        for p in item.get("parameters", []) + self.operation(template, method).get("parameters", []):
            p = self.resolve(p)
            out[(p["in"], p["name"])] = p
        return out

    def validate(self, instance, schema, what):
        js = self.json_schema(schema)
        errors = sorted(jsonschema.Draft4Validator(js).iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            raise AssertionError("%s does not match %s: %s at %s\n  (instance: %s)" % (
                what, self.path, best.message, "/".join(str(p) for p in best.absolute_path) or "(top)",
                json.dumps(instance)[:600]))

    def check_request_body(self, template, method, body):
        """A JSON body the server takes must be valid against the documented request schema."""
        rb = self.resolve(self.operation(template, method).get("requestBody") or {})
        media = rb.get("content", {}).get("application/json")
        if media is None:
            raise AssertionError("%s %s documents no application/json request body" % (method, template))
        self.validate(body, media["schema"], "the request body of %s %s" % (method, template))

    def request_body_valid(self, template, method, body):
        try:
            self.check_request_body(template, method, body)
            return True
        except AssertionError:
            return False

    def check_answer(self, template, method, resp):
        """The answer must be described for template+method: status, media type, headers, body."""
        what = "%s %s -> %d" % (method, template, resp.status)
        responses = self.operation(template, method)["responses"]
        code = str(resp.status)
        if code not in responses:
            raise AssertionError("%s: status %d is not listed in %s for %s %s (listed: %s); body %r" % (
                what, resp.status, self.path, method, template, ", ".join(sorted(responses)), resp.body[:300]))
        self.check_response(self.resolve(responses[code]), resp, what)
        COVERED.setdefault((template, method), set()).add(resp.status)

    def check_response(self, r, resp, what):
        for name, h in (r.get("headers") or {}).items():
            h = self.resolve(h)
            value = resp.headers.get(name.lower())
            if value is None:
                if h.get("required"):
                    raise AssertionError("%s: header %s is documented as required but missing (headers: %r)"
                                         % (what, name, resp.headers))
                continue
            schema = self.json_schema(h.get("schema", {}))
            v = int(value) if schema.get("type") == "integer" and re.fullmatch(r"-?\d+", value) else value
            self.validate(v, schema, "%s: header %s" % (what, name))
        content = r.get("content")
        if not content:
            if resp.body:
                raise AssertionError("%s: documented without a body, got %r" % (what, resp.body[:300]))
            return
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in content:
            raise AssertionError("%s: Content-Type %r is not documented (documented: %s)"
                                 % (what, resp.headers.get("content-type"), ", ".join(content)))
        schema = content[ctype].get("schema")
        if ctype == "application/json":
            try:
                body = json.loads(resp.body.decode("utf-8"))
            except ValueError:
                raise AssertionError("%s: the body is not JSON: %r" % (what, resp.body[:300]))
            if schema is not None:
                self.validate(body, schema, "%s: the body" % what)
        elif schema is not None:
            self.validate(resp.body.decode("utf-8"), schema, "%s: the body" % what)

    def check_generic(self, name, resp):
        """An answer for a path or method the document does not list (components.responses.NAME)."""
        r = self.resolve(self.doc["components"]["responses"][name])
        self.check_response(r, resp, "%s (%d)" % (name, resp.status))


def load_spec():
    return Spec(SPEC_PATH)


def fill(template, params):
    return re.sub(r"\{([^}]+)\}", lambda m: urllib.parse.quote(params[m.group(1)], safe=""), template)


def code_routes():
    """(METHOD, path template, role) of every route in admin/adm_http.c's table."""
    with open(ADM_HTTP) as f:
        src = f.read()
    m = re.search(r'#define\s+IMPORT_PATH\s+"([^"]+)"', src)
    import_path = m.group(1) if m else None
    table = re.search(r"k_routes\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    assert table, "could not find k_routes in %s" % ADM_HTTP
    roles = {"0": "none", "ANY_ROLE": "any", "ADM_ROLE_REGISTRY_READ": "registry-read",
             "ADM_ROLE_REGISTRY_WRITE": "registry-write", "ADM_ROLE_SERVICE": "service", "ADM_ROLE_ADMIN": "admin"}
    out = []
    for method, path, role in re.findall(r'\{\s*"([A-Z]+)"\s*,\s*("[^"]*"|IMPORT_PATH)\s*,\s*([A-Z_0-9]+)\s*,', table.group(1)):
        path = import_path if path == "IMPORT_PATH" else path.strip('"')
        assert role in roles, "unknown role %s in %s" % (role, ADM_HTTP)
        out.append((method, path, roles[role]))
    assert out, "no routes parsed from %s" % ADM_HTTP
    return out


# --------------------------------------------------------------------------------------------
# the document alone


class DocumentTest(unittest.TestCase):
    """The YAML document is a well-formed OpenAPI 3.0.3 description (Debian 12 has no
    openapi-spec-validator: these are the structural rules that matter for clients)."""

    @classmethod
    def setUpClass(cls):
        cls.spec = load_spec()
        cls.doc = cls.spec.doc

    def test_top_level(self):
        d = self.doc
        self.assertEqual(d.get("openapi"), "3.0.3")
        for k in ("title", "version", "description"):
            self.assertIsInstance(d["info"].get(k), str, "info.%s" % k)
        with open(os.path.join(sgtest.REPO, "CMakeLists.txt")) as f:
            version = re.search(r"project\(sacgate VERSION ([0-9.]+)", f.read()).group(1)
        self.assertEqual(d["info"]["version"], version, "info.version must be project(VERSION) of CMakeLists.txt")
        self.assertTrue(d.get("servers"), "servers")
        self.assertEqual(set(d) - {"openapi", "info", "servers", "paths", "components", "security", "tags",
                                   "externalDocs"}, set(), "unknown top-level keys")
        self.assertEqual(d["components"]["securitySchemes"]["bearer"], {
            "type": "http", "scheme": "bearer", "description": d["components"]["securitySchemes"]["bearer"]["description"]})

    def test_every_ref_resolves(self):
        def walk(node, where):
            if isinstance(node, dict):
                if "$ref" in node:
                    self.spec.resolve(node)
                for k, v in node.items():
                    walk(v, where + "/" + str(k))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, "%s/%d" % (where, i))
        walk(self.doc, "#")

    def _schemas(self):
        """Every Schema Object of the document, with where it is."""
        out = [("components/schemas/" + n, s) for n, s in self.doc["components"]["schemas"].items()]
        for n, h in self.doc["components"].get("headers", {}).items():
            out.append(("components/headers/%s" % n, h["schema"]))
        for n, p in self.doc["components"].get("parameters", {}).items():
            out.append(("components/parameters/%s" % n, p["schema"]))
        for n, r in self.doc["components"].get("responses", {}).items():
            for mt, media in r.get("content", {}).items():
                out.append(("components/responses/%s/%s" % (n, mt), media["schema"]))
        for template, method, op in self.spec.operations():
            where = "%s %s" % (method, template)
            for (loc, name), p in self.spec.parameters(template, method).items():
                out.append(("%s parameter %s" % (where, name), p["schema"]))
            rb = self.spec.resolve(op.get("requestBody") or {})
            for mt, media in rb.get("content", {}).items():
                out.append(("%s request %s" % (where, mt), media["schema"]))
            for code, r in op["responses"].items():
                r = self.spec.resolve(r)
                for mt, media in r.get("content", {}).items():
                    out.append(("%s %s %s" % (where, code, mt), media["schema"]))
                for hn, h in (r.get("headers") or {}).items():
                    out.append(("%s %s header %s" % (where, code, hn), self.spec.resolve(h)["schema"]))
        return out

    def test_schemas_are_valid(self):
        def keys(node, where):
            if not isinstance(node, dict) or "$ref" in node:
                if isinstance(node, dict):
                    self.assertEqual(set(node), {"$ref"}, "%s: $ref with siblings (ignored by OpenAPI 3.0)" % where)
                return
            unknown = {k for k in node if k not in SCHEMA_KEYS and not k.startswith("x-")}
            self.assertEqual(unknown, set(), "%s: keywords OpenAPI 3.0 does not have" % where)
            if "type" in node:
                self.assertIn(node["type"], ("string", "integer", "number", "boolean", "array", "object"), where)
            if node.get("type") == "array":
                self.assertIn("items", node, "%s: an array needs items" % where)
            for k in ("required", "enum"):
                if k in node:
                    self.assertIsInstance(node[k], list, "%s.%s" % (where, k))
                    self.assertTrue(node[k], "%s.%s is empty" % (where, k))
            for name, s in node.get("properties", {}).items():
                keys(s, "%s.properties.%s" % (where, name))
            for k in ("items", "not", "additionalProperties"):
                if isinstance(node.get(k), dict):
                    keys(node[k], "%s.%s" % (where, k))
            for k in ("allOf", "anyOf", "oneOf"):
                for i, s in enumerate(node.get(k, [])):
                    keys(s, "%s.%s[%d]" % (where, k, i))
            if "default" in node and "$ref" not in node and node.get("type"):
                jsonschema.Draft4Validator(self.spec.json_schema({k: v for k, v in node.items() if k != "default"})
                                           ).validate(node["default"])
        for where, schema in self._schemas():
            keys(schema, where)
            js = self.spec.json_schema(schema)
            jsonschema.Draft4Validator.check_schema(js)

    def test_operations(self):
        ids = set()
        for template, method, op in self.spec.operations():
            where = "%s %s" % (method, template)
            self.assertTrue(template.startswith("/"), where)
            self.assertNotIn(op.get("operationId"), ids, "%s: duplicate operationId" % where)
            self.assertRegex(op.get("operationId", ""), r"^[A-Za-z][A-Za-z0-9]*$", where)
            ids.add(op["operationId"])
            self.assertIsInstance(op.get("summary"), str, "%s: summary" % where)
            self.assertIsInstance(op.get("description"), str, "%s: description" % where)
            self.assertTrue(op.get("responses"), "%s: responses" % where)
            for code, r in op["responses"].items():
                self.assertRegex(str(code), r"^([1-5][0-9][0-9]|default)$", "%s: response key" % where)
                self.assertIsInstance(code, str, "%s: quote the status %r (YAML makes it a number)" % (where, code))
                self.assertIsInstance(self.spec.resolve(r).get("description"), str, "%s %s: description" % (where, code))
            role = op.get("x-sacgate-role")
            self.assertIn(role, ROLES, "%s: x-sacgate-role" % where)
            if role == "none":
                self.assertEqual(op.get("security"), [], "%s: no token, so security: []" % where)
            else:
                self.assertNotIn("security", op, "%s: uses the document's bearer security" % where)
                self.assertIn("401", op["responses"], "%s: 401 without a token" % where)
                if role != "any":
                    self.assertIn("403", op["responses"], "%s: 403 without the role" % where)
                    self.assertIn("`%s`" % role, op["description"], "%s: the description names its role" % where)
            # path parameters: declared once each, required, and all used
            declared = {name for (loc, name) in self.spec.parameters(template, method) if loc == "path"}
            used = set(re.findall(r"\{([^}]+)\}", template))
            self.assertEqual(declared, used, "%s: path parameters" % where)
            for (loc, name), p in self.spec.parameters(template, method).items():
                self.assertIn(loc, ("path", "query", "header"), where)
                if loc == "path":
                    self.assertIs(p.get("required"), True, "%s: path parameter %s must be required" % (where, name))
            rb = op.get("requestBody")
            if rb is not None:
                self.assertIn(method, ("POST", "PUT", "PATCH"), where)
                self.assertTrue(self.spec.resolve(rb).get("content"), where)

    def test_lists_exactly_the_routes_of_the_code(self):
        documented = {}
        for template, method, op in self.spec.operations():
            if method == "HEAD":
                continue   # HEAD is served by the tier probes only (app_health.c), listed for them
            path = re.sub(r"\{[^}]+\}", "*", template)
            documented[(method, path)] = op["x-sacgate-role"]
        in_code = {(m, p): role for m, p, role in code_routes()}
        self.assertEqual(sorted(set(in_code) - set(documented)), [], "routes of adm_http.c missing from the document")
        self.assertEqual(sorted(set(documented) - set(in_code)), [], "documented routes adm_http.c does not serve")
        for k, role in in_code.items():
            self.assertEqual(documented[k], role, "%s %s: the role in the document differs from adm_http.c" % k)


# --------------------------------------------------------------------------------------------
# the document against the server


class ApiCase(GatewayTest):
    TOKENS = {"svc": "service", "reader": "registry-read", "writer": "registry-write"}

    @classmethod
    def setUpClass(cls):
        cls.spec = load_spec()
        super().setUpClass()

    def call(self, method, template, params=None, query=None, body=None, token="admin", expect=None,
             port=None, headers=None, body_valid=None, timeout=30):
        """Send one request and check its answer against the document. body: a JSON-able object
        (checked against the documented request schema when body_valid, which defaults to
        whether a 2xx is expected) or bytes/str sent as they are."""
        op = self.spec.operation(template, method)
        documented = self.spec.parameters(template, method)
        for name in (query or {}):
            self.assertIn(("query", name), documented, "%s %s: query parameter %s is not documented"
                          % (method, template, name))
        path = fill(template, params or {})
        if query:
            path += "?" + urllib.parse.urlencode(query)
        if body_valid is None and expect is not None and 200 <= expect < 300 and isinstance(body, (dict, list)):
            body_valid = True
        if body_valid is not None and isinstance(body, (dict, list)):
            self.assertEqual(self.spec.request_body_valid(template, method, body), body_valid,
                             "%s %s: the documented request schema %s %r" % (
                                 method, template, "should accept" if body_valid else "should refuse", body))
        if token == "admin":
            token = self.gw.admin_token
        elif token in self.gw.tokens:
            token = self.gw.tokens[token]
        r = sgtest.http_request(port or self.gw.admin_port, method, path, body, token, headers, timeout)
        self.spec.check_answer(template, method, r)
        if expect is not None:
            self.assertEqual(r.status, expect, "%s %s: expected %d, got %r" % (method, path, expect, r))
        self.assertIn("x-sacgate-role", op)
        return r

    def error_of(self, r):
        return r.json.get("error")


class ApiTest(ApiCase):
    """Every route of a running `sacgate all`, with its errors."""

    # ------------------------------------------------------------ probes, generic answers

    def test_probes(self):
        r = self.call("GET", "/healthz", token=None, expect=200)
        self.assertEqual(r.json, {"status": "ok"})
        r = self.call("GET", "/readyz", token=None, expect=200)
        self.assertEqual(r.json["status"], "ready")
        self.call("HEAD", "/healthz", token=None, expect=405)
        self.call("HEAD", "/readyz", token=None, expect=405)

    def test_unknown_paths_and_methods(self):
        for path in ("/nope", "/v1", "/v1/devices/", "/v1/devices/x/nope", "/v1/feedback/x", "/v1/inquiries/x",
                     "/v1/notifications/x/y", "/v1/devices/x/methods", "/v1/devices/x/methods/a/b",
                     "/v1/devices/x/twin", "/v1/devices/x/keys:rotate"):
            r = sgtest.http_request(self.gw.admin_port, "GET", path, token=self.gw.admin_token)
            self.assertEqual(r.status, 404, "%s: %r" % (path, r))
            self.spec.check_generic("NotFound", r)
            # and the document does not claim it
            self.assertNotIn(path, self.spec.doc["paths"])
        for method, template in (("POST", "/healthz"), ("DELETE", "/v1/cluster"), ("PATCH", "/v1/devices/{id}"),
                                 ("PUT", "/v1/devices/{id}/messages"), ("GET", "/v1/devices:import"),
                                 ("OPTIONS", "/metrics"), ("GET", "/v1/telemetry/groups/{group}/commit"),
                                 ("GET", "/v1/feedback/groups/{group}/commit"), ("POST", "/v1/feedback"),
                                 ("POST", "/v1/devices"), ("GET", "/v1/devices/{id}/keys:regenerate"),
                                 ("GET", "/v1/notifications"), ("DELETE", "/v1/notifications/{id}"),
                                 ("GET", "/v1/devices/{id}/methods/{name}")):
            self.assertNotIn(method.lower(), self.spec.doc["paths"][template], "%s %s is documented" % (method, template))
            path = fill(template, {"id": "dev-1", "group": "g", "name": "ca-1"})
            r = sgtest.http_request(self.gw.admin_port, method, path, body="{}" if method != "GET" else None,
                                    token=self.gw.admin_token)
            self.assertEqual(r.status, 405, "%s %s: %r" % (method, path, r))
            self.spec.check_generic("MethodNotAllowed", r)

    def test_body_too_large_anywhere(self):
        big = "x" * (300 * 1024)
        for method, template in (("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/v1/cluster"),
                                 ("GET", "/v1/telemetry"), ("DELETE", "/v1/devices/{id}"),
                                 ("POST", "/v1/telemetry/groups/{group}/commit"), ("PUT", "/v1/devices/{id}"),
                                 ("GET", "/v1/devices"), ("POST", "/v1/devices/{id}/keys:regenerate"),
                                 ("GET", "/v1/feedback"), ("POST", "/v1/feedback/groups/{group}/commit")):
            r = self.call(method, template, params={"id": "big-1", "group": "g", "name": "ca-1"}, body=big, expect=413)
            self.assertEqual(self.error_of(r), "BodyTooLarge")

    # ------------------------------------------------------------ roles

    def test_roles_are_enforced_as_documented(self):
        """401 without a token or with an unknown one, 403 with a token lacking the role, and
        neither with a token holding just the documented role."""
        holder = {"registry-read": "reader", "registry-write": "writer", "service": "svc", "admin": "admin",
                  "any": "reader"}
        lacking = {"registry-read": "writer", "registry-write": "reader", "service": "reader", "admin": "svc"}
        params = {"id": sgtest.uid("role"), "group": "roles", "name": sgtest.uid("roleca")}
        for template, method, op in self.spec.operations():
            role = op["x-sacgate-role"]
            if role == "none" or method == "HEAD":
                continue
            body = "" if template == "/v1/devices:import" else ({} if method in ("POST", "PUT") else None)
            with self.subTest(route="%s %s" % (method, template)):
                r = self.call(method, template, params=params, body=body, token=None, expect=401)
                self.assertEqual(self.error_of(r), "Unauthorized")
                r = self.call(method, template, params=params, body=body, token="sgt_" + "0" * 48, expect=401)
                r = self.call(method, template, params=params, body=body,
                              headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}, token=None,
                              expect=401)
                if role in lacking:
                    r = self.call(method, template, params=params, body=body, token=lacking[role], expect=403)
                    self.assertEqual(self.error_of(r), "Forbidden")
                r = self.call(method, template, params=params, body=body, token=holder[role], body_valid=False
                              if body == {} and template in COMMITS else None)
                self.assertNotIn(r.status, (401, 403), "%s %s with just the role %s: %r" % (method, template, role, r))

    # ------------------------------------------------------------ registry

    def test_device_lifecycle(self):
        did = sgtest.uid("oa")
        p = {"id": did}
        r = self.call("PUT", "/v1/devices/{id}", p, body={"tags": {"site": "north", "n": "3"}}, expect=201)
        created = r.json
        self.assertIn("primaryKey", created["auth"])
        self.assertIn("secondaryKey", created["auth"])
        r = self.call("PUT", "/v1/devices/{id}", p, body={"status": "disabled"}, expect=200)
        self.assertNotIn("primaryKey", r.json["auth"], "an update without auth generates nothing")
        self.assertEqual(r.json["generation"], created["generation"] + 1)
        r = self.call("GET", "/v1/devices/{id}", p, expect=200)
        self.assertEqual(r.json["auth"], {"type": "sas"}, "no secrets in a GET")
        self.assertEqual(r.json["connection"], {"connected": False})
        # an entry read can be sent back
        self.call("PUT", "/v1/devices/{id}", p, body=r.json, expect=200)
        # explicit keys are not echoed
        keys = {"type": "sas", "primaryKey": sgtest.new_key(), "secondaryKey": sgtest.new_key()}
        r = self.call("PUT", "/v1/devices/{id}", {"id": did + "-k"}, body={"auth": keys, "limits": {"maxQueuedMessages": 5}},
                      expect=201)
        self.assertEqual(r.json["auth"], {"type": "sas"})
        self.assertEqual(r.json["limits"], {"maxQueuedMessages": 5, "maxQueuedBytes": 1048576})
        # the other credential kinds
        r = self.call("PUT", "/v1/devices/{id}", {"id": did + "-psk"}, body={"auth": {"type": "psk"}}, expect=201)
        self.assertRegex(r.json["auth"]["key"], r"^[0-9a-f]{64}$")
        self.assertEqual(self.call("GET", "/v1/devices/{id}", {"id": did + "-psk"}, expect=200).json["auth"], {"type": "psk"})
        tp = "AB" * 32
        r = self.call("PUT", "/v1/devices/{id}", {"id": did + "-x"}, body={"auth": {"type": "x509", "thumbprints": [tp]}},
                      expect=201)
        self.assertEqual(r.json["auth"], {"type": "x509", "thumbprints": [tp.lower()]})
        self.call("GET", "/v1/devices/{id}", {"id": did + "-x"}, expect=200)
        self.call("PUT", "/v1/devices/{id}", {"id": did + "-ca"}, body={"auth": {"type": "x509-ca"}}, expect=201)
        self.call("DELETE", "/v1/devices/{id}", p, expect=204)
        r = self.call("DELETE", "/v1/devices/{id}", p, expect=404)
        self.assertEqual(self.error_of(r), "DeviceNotFound")
        r = self.call("GET", "/v1/devices/{id}", p, expect=404)
        self.assertEqual(self.error_of(r), "DeviceNotFound")

    def test_device_connection_shape(self):
        dev = self.gw.create_device()
        self.connected(dev, subscribe=True)
        p = {"id": dev["id"]}
        r = wait_until(lambda: (lambda r: r if r.json["connection"].get("subscribed") else None)(
            self.call("GET", "/v1/devices/{id}", p, expect=200)), 20, "the device to show as subscribed")
        conn = r.json["connection"]
        self.assertTrue(conn["connected"])
        self.assertEqual(conn["frontend"], "fe-0")

    def test_device_errors(self):
        for bad_id in ("bad id", "x" * 129, "ok\x7f", "a\x00b"):
            for method in ("GET", "DELETE", "PUT"):
                r = self.call(method, "/v1/devices/{id}", {"id": bad_id}, body={} if method == "PUT" else None, expect=400)
                self.assertEqual(self.error_of(r), "InvalidDeviceId", bad_id)
        # 130 characters (or "a/b", two segments once decoded): no route
        for method in ("GET", "DELETE", "PUT"):
            for bad_id in ("y" * 130, "a/b"):
                r = self.call(method, "/v1/devices/{id}", {"id": bad_id}, body={} if method == "PUT" else None,
                              expect=404)
                self.assertEqual(self.error_of(r), "NotFound")
        did = sgtest.uid("bad")
        p = {"id": did}
        for body in (None, "", "{", "[1]", '{"a":1,"a":2}'):
            r = self.call("PUT", "/v1/devices/{id}", p, body=body, expect=400)
            self.assertEqual(self.error_of(r), "InvalidJson", body)
        r = self.call("PUT", "/v1/devices/{id}", p, body={"deviceId": "other"}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidDevice")
        for body in ({"color": "red"}, {"status": "on"}, {"tags": []}, {"tags": {"n": 3}}, {"tags": {"v": "x" * 257}},
                     {"tags": {"t%d" % i: "" for i in range(33)}},
                     {"limits": {"maxQueuedMessages": 0}}, {"limits": {"speed": 1}},
                     {"auth": {"type": "sas", "primaryKey": "c2hvcnQ="}}, {"auth": {"type": "rsa"}}, {"auth": {}},
                     {"auth": {"type": "x509"}}, {"auth": {"type": "psk", "key": "abcd"}}):
            r = self.call("PUT", "/v1/devices/{id}", p, body=body, expect=400, body_valid=False)
            self.assertEqual(self.error_of(r), "InvalidDevice", body)
        self.call("GET", "/v1/devices/{id}", p, expect=404)

    def test_device_list(self):
        run = sgtest.uid("lst")
        for i in range(3):
            self.call("PUT", "/v1/devices/{id}", {"id": "%s-%d" % (run, i)}, body={"tags": {"run": run}}, expect=201)
        r = self.call("GET", "/v1/devices", query={"tag": "run:" + run, "limit": 2}, expect=200)
        self.assertEqual([e["deviceId"] for e in r.json["devices"]], [run + "-0", run + "-1"])
        self.assertEqual(r.json["devices"][0]["auth"], {"type": "sas"})
        r = self.call("GET", "/v1/devices", query={"tag": "run:" + run, "after": r.json["next"]}, expect=200)
        self.assertEqual(([e["deviceId"] for e in r.json["devices"]], r.json["next"]), ([run + "-2"], None))
        self.call("GET", "/v1/devices", query={"tag": "run"}, expect=200)
        self.call("GET", "/v1/devices", query={"after": ""}, expect=200)
        r = self.call("GET", "/v1/devices", expect=200)
        self.assertLessEqual(len(r.json["devices"]), 100)
        for query in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"after": "bad id"}, {"tag": "bad key"},
                      {"tag": "k:" + "v" * 257}):
            r = self.call("GET", "/v1/devices", query=query, expect=400)
            self.assertEqual(self.error_of(r), "InvalidQuery", query)

    def test_keys_regenerate(self):
        dev = self.gw.create_device()
        p = {"id": dev["id"]}
        t = "/v1/devices/{id}/keys:regenerate"
        r = self.call("POST", t, p, body={"key": "primary"}, expect=200)
        self.assertEqual(set(r.json["auth"]), {"type", "primaryKey"})
        self.assertEqual(r.json["generation"], dev["entry"]["generation"] + 1)
        r = self.call("POST", t, p, body={"key": "secondary"}, expect=200)
        self.assertEqual(set(r.json["auth"]), {"type", "secondaryKey"})
        r = self.call("POST", t, p, body={}, expect=200)
        self.assertEqual(set(r.json["auth"]), {"type", "primaryKey", "secondaryKey"})
        r = self.call("POST", t, p, expect=200)   # no body at all: both
        self.assertEqual(set(r.json["auth"]), {"type", "primaryKey", "secondaryKey"})
        self.assertEqual(r.json["generation"], dev["entry"]["generation"] + 4)
        self.assertEqual(self.call("GET", "/v1/devices/{id}", p, expect=200).json["auth"], {"type": "sas"})
        for body in ({"key": "tertiary"}, {"key": 1}, {"key": "both", "x": 1}):
            r = self.call("POST", t, p, body=body, expect=400, body_valid=False)
            self.assertEqual(self.error_of(r), "InvalidKeyName", body)
        for body in ("nope", "[]"):
            r = self.call("POST", t, p, body=body, expect=400)
            self.assertEqual(self.error_of(r), "InvalidJson", body)
        r = self.call("POST", t, {"id": sgtest.uid("none")}, body={}, expect=404)
        self.assertEqual(self.error_of(r), "DeviceNotFound")
        r = self.call("POST", t, {"id": "bad id"}, body={}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidDeviceId")
        psk = sgtest.uid("psk")
        self.call("PUT", "/v1/devices/{id}", {"id": psk}, body={"auth": {"type": "psk"}}, expect=201)
        r = self.call("POST", t, {"id": psk}, body={"key": "both"}, expect=400)
        self.assertEqual(self.error_of(r), "NotSasDevice")

    def test_certificate_authorities(self):
        with tempfile.TemporaryDirectory(prefix="sg-openapi-ca-") as d:
            root = sgtest.make_cert(d, "Root", ca=True)
            leaf = sgtest.make_cert(d, "leaf")
        name = sgtest.uid("ca")
        t = "/v1/certificateAuthorities/{name}"
        pem = root.cert_pem.decode()
        r = self.call("PUT", t, {"name": name}, body={"certificate": pem}, expect=201)
        self.assertEqual(r.json["thumbprint"], root.thumbprint)
        self.call("PUT", t, {"name": name}, body={"certificate": pem}, expect=200)
        self.assertEqual(self.call("GET", t, {"name": name}, expect=200).json["name"], name)
        listed = self.call("GET", "/v1/certificateAuthorities", expect=200).json["certificateAuthorities"]
        self.assertIn(name, [c["name"] for c in listed])
        for body in ({"certificate": leaf.cert_pem.decode()}, {"certificate": "x"}):
            r = self.call("PUT", t, {"name": name}, body=body, expect=400, body_valid=True)
            self.assertEqual(self.error_of(r), "InvalidCertificate")
        r = self.call("PUT", t, {"name": name}, body={}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidCertificate")
        r = self.call("PUT", t, {"name": "bad name"}, body={"certificate": pem}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidDeviceId")
        self.call("DELETE", t, {"name": name}, expect=204)
        r = self.call("DELETE", t, {"name": name}, expect=404)
        self.assertEqual(self.error_of(r), "CertificateAuthorityNotFound")
        r = self.call("GET", t, {"name": name}, expect=404)
        self.assertEqual(self.error_of(r), "CertificateAuthorityNotFound")

    def test_import(self):
        existing = self.gw.create_device()
        a, b = sgtest.uid("imp"), sgtest.uid("imp")
        lines = [
            json.dumps({"deviceId": a, "tags": {"batch": "1"}}),
            "",
            json.dumps({"deviceId": b, "auth": {"type": "sas", "primaryKey": sgtest.new_key(),
                                                 "secondaryKey": sgtest.new_key()}}),
            "{not json",
            json.dumps({"deviceId": existing["id"], "importMode": "create"}),
            json.dumps({"deviceId": sgtest.uid("imp"), "importMode": "update"}),
            json.dumps({"deviceId": sgtest.uid("imp"), "importMode": "sometimes"}),
            json.dumps({"deviceId": "bad id"}),
            json.dumps({"deviceId": sgtest.uid("imp"), "color": "red"}),
            json.dumps({"deviceId": sgtest.uid("imp"), "auth": {"type": "psk"}}),
        ]
        r = self.call("POST", "/v1/devices:import", body="\n".join(lines) + "\n", expect=200)
        res = r.json
        self.assertEqual((res["lines"], res["created"], res["failed"]), (9, 3, 6), res)
        self.assertEqual(sorted(e["error"] for e in res["errors"]),
                         sorted(["InvalidJson", "DeviceExists", "DeviceNotFound", "InvalidImportMode",
                                 "InvalidDeviceId", "InvalidDevice"]), res)
        self.assertEqual([k["line"] for k in res["generatedKeys"]], [1, 10], res)
        self.call("GET", "/v1/devices/{id}", {"id": a}, expect=200)
        # an empty body imports nothing
        r = self.call("POST", "/v1/devices:import", body="", expect=200)
        self.assertEqual(r.json["lines"], 0)

    # ------------------------------------------------------------ messages

    def test_messages(self):
        dev = self.gw.create_device(limits={"maxQueuedMessages": 2})
        p = {"id": dev["id"]}
        raw_bytes = bytes([0, 1, 2, 0xfe, 0xff])
        r1 = self.call("POST", "/v1/devices/{id}/messages", p,
                       body={"payload": "öffnen", "properties": {"reason": "leak", "k": ""}, "ttlSeconds": 600,
                             "ack": "full"}, expect=201)
        self.call("POST", "/v1/devices/{id}/messages", p,
                  body={"payload": base64.b64encode(raw_bytes).decode(), "payloadEncoding": "base64"}, expect=201)
        r = self.call("POST", "/v1/devices/{id}/messages", p, body={"payload": "third"}, expect=429)
        self.assertEqual(self.error_of(r), "DeviceQueueFull")
        self.assertEqual((r.json["queued"], r.json["limit"]), (2, 2))
        self.assertEqual(r.headers["retry-after"], str(r.json["retryAfter"]))
        r = self.call("GET", "/v1/devices/{id}/messages", p, expect=200)
        msgs = r.json["messages"]
        self.assertEqual([m["messageId"] for m in msgs][:1], [r1.json["messageId"]])
        # payloads come back as base64 of the bytes queued: UTF-8 text as its bytes
        self.assertEqual(base64.b64decode(msgs[0]["payload"]), "öffnen".encode())
        self.assertEqual(base64.b64decode(msgs[1]["payload"]), raw_bytes)
        self.assertEqual(msgs[0]["properties"], {"reason": "leak", "k": ""})
        self.assertEqual(msgs[0]["ack"], "full")
        r = self.call("DELETE", "/v1/devices/{id}/messages", p, expect=200)
        self.assertEqual(r.json, {"purged": 2})
        r = self.call("GET", "/v1/devices/{id}/deadletters", p, expect=200)
        self.assertEqual([d["reason"] for d in r.json["deadLetters"]], ["purged", "purged"])
        self.assertEqual(self.call("GET", "/v1/devices/{id}/messages", p, expect=200).json["messages"], [])

    def test_methods(self):
        """A direct method answered by a paho device, the offline answers, the fallback, errors."""
        dev = self.gw.create_device()
        p = {"id": dev["id"], "name": "reboot"}
        t = "/v1/devices/{id}/methods/{name}"
        r = self.call("POST", t, p, body={"payload": 1}, expect=404)
        self.assertEqual(self.error_of(r), "DeviceNotOnline")
        r = self.call("POST", t, p, query={"fallback": "queue"}, body={"payload": {"a": 1}, "ttlSeconds": 60}, expect=202)
        self.assertIs(r.json["queued"], True)
        c = sgtest.MqttDevice(self.gw, dev["id"], key=dev["primary"]).connect_ok()
        try:
            c.serve_methods(lambda name, payload, rid: (200, b'{"done": true}' if name == "reboot" else b"no json"))
            wait_until(lambda: self.call("GET", "/v1/devices/{id}", p, expect=200).json["connection"].get("methods"), 10,
                       "the method subscription")
            r = self.call("POST", t, p, body={"payload": None, "responseTimeoutSeconds": 5}, expect=200)
            self.assertEqual(r.json, {"status": 200, "payload": {"done": True}})
            r = self.call("POST", t, {"id": dev["id"], "name": "x"}, expect=502)
            self.assertEqual(self.error_of(r), "InvalidMethodResponse")
        finally:
            c.close()
        for body, err in (({"responseTimeoutSeconds": 1}, "InvalidMethodRequest"), ({"x": 1}, "InvalidMethodRequest")):
            self.assertEqual(self.error_of(self.call("POST", t, p, body=body, expect=400)), err)
        r = self.call("POST", t, {"id": dev["id"], "name": "a#b"}, body={}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidMethodName")
        r = self.call("POST", t, {"id": "nobody-" + dev["id"], "name": "m"}, body={}, expect=404)
        self.assertEqual(self.error_of(r), "DeviceNotFound")

    def test_message_delivered_bytes(self):
        """What the device receives is exactly the bytes queued (base64 decoded, or UTF-8)."""
        dev = self.gw.create_device()
        raw = self.raw_subscribed(dev)
        payload = bytes(range(256))
        self.call("POST", "/v1/devices/{id}/messages", {"id": dev["id"]},
                  body={"payload": base64.b64encode(payload).decode(), "payloadEncoding": "base64",
                        "properties": {"a b": "c&d"}}, expect=201)
        pid, dup, got = sgtest.read_publish(raw)
        self.assertEqual(got, payload)
        raw.send(sgtest.pkt_puback(pid))
        self.call("POST", "/v1/devices/{id}/messages", {"id": dev["id"]}, body={"payload": "héllo"}, expect=201)
        pid, dup, got = sgtest.read_publish(raw)
        self.assertEqual(got, "héllo".encode())
        raw.send(sgtest.pkt_puback(pid))

    def test_message_errors(self):
        dev = self.gw.create_device()
        p = {"id": dev["id"]}
        for body in (None, "", "nope", "[]"):
            r = self.call("POST", "/v1/devices/{id}/messages", p, body=body, expect=400)
            self.assertEqual(self.error_of(r), "InvalidJson")
        for body in ({"payload": "x", "extra": 1}, {"payload": 5}, {"payloadEncoding": "hex"},
                     {"payload": "!!!", "payloadEncoding": "base64"}, {"ttlSeconds": 0},
                     {"ttlSeconds": 172801}, {"ttlSeconds": "60"}, {"ack": "always"}, {"properties": []},
                     {"properties": {"k": 1}}, {"properties": {"$.mid": "x"}}, {"properties": {"iothub-x": "y"}},
                     {"properties": {"k%d" % i: "v" for i in range(65)}}, {"properties": {"k": "v" * 4097}}):
            r = self.call("POST", "/v1/devices/{id}/messages", p, body=body, expect=400)
            self.assertEqual(self.error_of(r), "InvalidMessage", body)
        r = self.call("POST", "/v1/devices/{id}/messages", p, body={"payload": "m" * 70000}, expect=413)
        self.assertEqual(self.error_of(r), "MessageTooLarge")
        r = self.call("POST", "/v1/devices/{id}/messages", p, body={"payload": "m" * 300000}, expect=413)
        self.assertEqual(self.error_of(r), "BodyTooLarge")
        off = self.gw.create_device(status="disabled")
        r = self.call("POST", "/v1/devices/{id}/messages", {"id": off["id"]}, body={"payload": "x"}, expect=403)
        self.assertEqual(self.error_of(r), "DeviceDisabled")
        unknown = {"id": sgtest.uid("none")}
        for method, template, body in (("POST", "/v1/devices/{id}/messages", {"payload": "x"}),
                                       ("GET", "/v1/devices/{id}/messages", None),
                                       ("DELETE", "/v1/devices/{id}/messages", None),
                                       ("GET", "/v1/devices/{id}/deadletters", None)):
            r = self.call(method, template, unknown, body=body, expect=404)
            self.assertEqual(self.error_of(r), "DeviceNotFound")
            r = self.call(method, template, {"id": "no good"}, body=body, expect=400)
            self.assertEqual(self.error_of(r), "InvalidDeviceId")

    def test_notifications(self):
        tags = {"fleet": sgtest.uid("oa")}
        dev = self.gw.create_device(tags=tags)
        r = self.call("POST", "/v1/notifications", body={"tags": tags, "payload": "x", "ack": "full"}, token="svc",
                      expect=202)
        self.assertEqual((r.json["targets"], r.json["rejected"]), (1, 0))
        nid = r.json["notificationId"]
        r = self.call("GET", "/v1/notifications/{id}", {"id": nid}, token="svc", expect=200)
        self.assertTrue(r.json["complete"])
        self.assertEqual(self.call("GET", "/v1/devices/{id}/messages", {"id": dev["id"]}, expect=200)
                         .json["messages"][0]["properties"], {"$.nid": nid})
        for body in (None, "[]"):
            r = self.call("POST", "/v1/notifications", body=body, token="svc", expect=400)
            self.assertEqual(self.error_of(r), "InvalidJson")
        for body in ({"payload": "x"}, {"tags": {}}, {"tags": {"k": 1}}):
            r = self.call("POST", "/v1/notifications", body=body, token="svc", expect=400)
            self.assertEqual(self.error_of(r), "InvalidNotification")
        r = self.call("POST", "/v1/notifications", body={"tags": tags, "ttlSeconds": 0}, token="svc", expect=400)
        self.assertEqual(self.error_of(r), "InvalidMessage")
        r = self.call("POST", "/v1/notifications", body={"tags": tags, "payload": "m" * 70000}, token="svc",
                      expect=413)
        self.assertEqual(self.error_of(r), "MessageTooLarge")
        r = self.call("POST", "/v1/notifications", body="x" * (300 * 1024), token="svc", expect=413)
        self.assertEqual(self.error_of(r), "BodyTooLarge")
        for nid in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
            r = self.call("GET", "/v1/notifications/{id}", {"id": nid}, token="svc", expect=404)
            self.assertEqual(self.error_of(r), "NotificationNotFound")

    def test_inquiries(self):
        d = self.gw.create_device()
        with sgtest.MqttDevice(self.gw, d["id"], key=d["primary"]) as dev:
            dev.connect_ok()
            dev.wait_acked([dev.publish("devices/%s/inquiries/oa/?$rid=1" % d["id"], "{}", 1)])
            mine = []
            for _ in range(20):
                r = self.call("GET", "/v1/inquiries", query={"wait": 1, "max": 100}, token="svc", expect=200)
                mine += [q for q in r.json["inquiries"] if q["deviceId"] == d["id"]]
                if mine:
                    break
            self.assertEqual(len(mine), 1)
            p = {"id": mine[0]["inquiryId"]}
            r = self.call("POST", "/v1/inquiries/{id}/response", p, body={"status": 200, "payload": [1]}, token="svc",
                          expect=200)
            self.assertEqual(r.json, {"delivered": True})
            r = self.call("POST", "/v1/inquiries/{id}/response", p, body={"status": 200}, token="svc", expect=404)
            self.assertEqual(self.error_of(r), "InquiryNotFound")
        r = self.call("POST", "/v1/inquiries/{id}/response", p, body={"status": 1}, token="svc", expect=400)
        self.assertEqual(self.error_of(r), "InvalidAnswer")
        r = self.call("POST", "/v1/inquiries/{id}/response", p, body="[]", token="svc", expect=400)
        self.assertEqual(self.error_of(r), "InvalidJson")
        r = self.call("GET", "/v1/inquiries", query={"max": 0}, token="svc", expect=400)
        self.assertEqual(self.error_of(r), "InvalidQuery")

    def test_revoked_dead_letters(self):
        dev = self.gw.create_device()
        p = {"id": dev["id"]}
        self.call("POST", "/v1/devices/{id}/messages", p, body={"payload": "x"}, expect=201)
        self.call("DELETE", "/v1/devices/{id}", p, expect=204)
        self.call("GET", "/v1/devices/{id}/deadletters", p, expect=404)
        self.call("PUT", "/v1/devices/{id}", p, body={}, expect=201)
        r = self.call("GET", "/v1/devices/{id}/deadletters", p, expect=200)
        self.assertEqual([d["reason"] for d in r.json["deadLetters"]], ["revoked"])

    # ------------------------------------------------------------ telemetry

    def test_telemetry(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        payload = bytes([0xff, 0x00, 0x41]) + "ü".encode()
        c.send(payload, props={"temp": "21", "$.ct": "application/octet-stream"})
        rec = self.gw.wait_records(dev["id"], 1)[0]
        last = rec["offset"]
        r = self.call("GET", "/v1/telemetry", query={"partition": 0, "after": last - 1, "max": 1}, expect=200)
        got = r.json["records"][0]
        self.assertEqual(base64.b64decode(got["payload"]), payload)
        self.assertEqual(got["properties"]["temp"], "21")
        self.assertEqual(got["properties"]["$.ct"], "application/octet-stream")
        self.assertEqual(got["properties"]["iothub-connection-device-id"], dev["id"])
        self.assertEqual(json.loads(got["properties"]["iothub-connection-auth-method"])["type"], "sas")
        self.assertEqual(r.json["next"], last)
        # nothing after the end, with a short wait
        r = self.call("GET", "/v1/telemetry", query={"after": last, "wait": 1}, expect=200)
        self.assertEqual((r.json["records"], r.json["next"]), ([], last))
        self.call("GET", "/v1/telemetry", expect=200)
        # a consumer group
        group = sgtest.uid("grp")
        r = self.call("GET", "/v1/telemetry", query={"group": group, "partition": 0}, expect=200)
        self.assertEqual(r.json["group"], group)
        self.call("POST", "/v1/telemetry/groups/{group}/commit", {"group": group},
                  body={"partition": 0, "offset": last}, expect=204)
        r = self.call("GET", "/v1/telemetry", query={"group": group}, expect=200)
        self.assertTrue(all(x["offset"] > last for x in r.json["records"]), r.json)
        self.call("POST", "/v1/telemetry/groups/{group}/commit", {"group": group}, body={"partition": 0, "offset": -1},
                  expect=204)

    def test_telemetry_errors(self):
        self.log_errors("telemetry")

    def log_errors(self, log):
        """The errors of a log's read and group commit (telemetry and feedback answer alike)."""
        for q in ({"partition": -1}, {"partition": "x"}, {"after": -2}, {"after": "1.5"}, {"max": 0}, {"max": 1001},
                  {"wait": 61}, {"wait": ""}, {"group": "g", "after": 0}):
            r = self.call("GET", "/v1/%s" % log, query=q, expect=400)
            self.assertEqual(self.error_of(r), "InvalidQuery", q)
        for g in ("bad!", "x" * 65):
            r = self.call("GET", "/v1/%s" % log, query={"group": g}, expect=400)
            self.assertEqual(self.error_of(r), "InvalidGroup", g)
        r = self.call("GET", "/v1/%s" % log, query={"partition": 99}, expect=404)
        self.assertEqual(self.error_of(r), "PartitionNotFound")
        t = "/v1/%s/groups/{group}/commit" % log
        for body in (None, "", "{", "7"):
            r = self.call("POST", t, {"group": "g1"}, body=body, expect=400)
            self.assertEqual(self.error_of(r), "InvalidJson", body)
        for body in ({}, {"partition": 0}, {"partition": "0", "offset": 0}, {"partition": -1, "offset": 0},
                     {"partition": 0, "offset": -2}, {"partition": 0, "offset": 1.5}):
            r = self.call("POST", t, {"group": "g1"}, body=body, expect=400, body_valid=False)
            self.assertEqual(self.error_of(r), "InvalidCommit", body)
        r = self.call("POST", t, {"group": "g1"}, body={"partition": 0, "offset": 1 << 40}, expect=400)
        self.assertEqual(self.error_of(r), "OffsetOutOfRange")
        r = self.call("POST", t, {"group": "g1"}, body={"partition": 99, "offset": 0}, expect=404)
        self.assertEqual(self.error_of(r), "PartitionNotFound")
        r = self.call("POST", t, {"group": "bad!"}, body={"partition": 0, "offset": -1}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidGroup")
        r = self.call("POST", t, {"group": "g" * 129}, body={"partition": 0, "offset": -1}, expect=400)
        self.assertEqual(self.error_of(r), "InvalidDeviceId")
        r = self.call("POST", t, {"group": "g" * 130}, body={"partition": 0, "offset": -1}, expect=404)
        self.assertEqual(self.error_of(r), "NotFound")

    # ------------------------------------------------------------ feedback

    def test_feedback(self):
        dev = self.gw.create_device()
        p = {"id": dev["id"]}
        mid = self.call("POST", "/v1/devices/{id}/messages", p, body={"payload": "x", "ack": "full"},
                        expect=201).json["messageId"]
        self.call("DELETE", "/v1/devices/{id}/messages", p, expect=200)
        # sacgate all has one shard by default: partition 0; its newest record is ours
        last = self.call("GET", "/v1/cluster", expect=200).json["shards"][0]["feedbackLast"]
        r = self.call("GET", "/v1/feedback", query={"partition": 0, "after": last - 1, "max": 1}, token="svc",
                      expect=200)
        self.assertEqual([(x["messageId"], x["deviceId"], x["outcome"], x["offset"]) for x in r.json["records"]],
                         [(mid, dev["id"], "purged", last)])
        self.assertEqual((r.json["next"], r.json["partition"]), (last, 0))
        # nothing after the end, with a short wait
        r = self.call("GET", "/v1/feedback", query={"after": last, "wait": 1}, expect=200)
        self.assertEqual((r.json["records"], r.json["next"]), ([], last))
        self.call("GET", "/v1/feedback", expect=200)
        # a consumer group
        group = sgtest.uid("fgrp")
        r = self.call("GET", "/v1/feedback", query={"group": group, "partition": 0}, expect=200)
        self.assertEqual(r.json["group"], group)
        self.assertIn(mid, [x["messageId"] for x in r.json["records"]])
        self.call("POST", "/v1/feedback/groups/{group}/commit", {"group": group},
                  body={"partition": 0, "offset": last}, token="svc", expect=204)
        r = self.call("GET", "/v1/feedback", query={"group": group}, expect=200)
        self.assertTrue(all(x["offset"] > last for x in r.json["records"]), r.json)
        self.call("POST", "/v1/feedback/groups/{group}/commit", {"group": group}, body={"partition": 0, "offset": -1},
                  expect=204)

    def test_feedback_errors(self):
        self.log_errors("feedback")

    # ------------------------------------------------------------ operations

    def test_cluster_and_metrics(self):
        r = self.call("GET", "/v1/cluster", expect=200)
        self.assertEqual(r.json["ring"]["partitions"], len(r.json["shards"]))
        self.assertIn("rocksdb", r.json["shards"][0])
        r = self.call("GET", "/metrics", expect=200)
        self.assertIn("sacgate_router_up 1", r.text)
        self.assertRegex(r.text, r'(?m)^sacgate_shard_up\{shard="store-0"\} 1$')


class AdminWithoutRouterTest(ApiCase):
    """An admin whose router never answers: the probes, cluster and partition errors it documents."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.port = sgtest.free_port()
        cls.log = open(os.path.join(cls.gw.dir, "admin-orphan.log"), "ab")
        cls.proc = subprocess.Popen([sgtest.BIN, "admin", "--routers", "tcp://127.0.0.1:1", "--admin-port",
                                     str(cls.port), "--tokens", os.path.join(cls.gw.dir, "tokens"),
                                     "--set", "cluster.insecure=true", "--set", "cluster.request_timeout=2"],
                                    stdout=cls.log, stderr=cls.log, stdin=subprocess.DEVNULL)
        wait_until(lambda: sgtest._tcp_open(cls.port), 20, "the routerless admin to listen")

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(15)
        cls.log.close()
        super().tearDownClass()

    def test_answers_without_a_router(self):
        port = self.port
        r = self.call("GET", "/readyz", token=None, port=port, expect=503)
        if "status" in r.json:
            self.assertEqual(r.json, {"status": "router unreachable", "shards": []})
        self.call("GET", "/healthz", token=None, port=port, expect=200)
        r = self.call("GET", "/v1/cluster", port=port, expect=503)
        self.assertIn(self.error_of(r), ("RouterUnavailable", "Unavailable"))
        r = self.call("GET", "/v1/telemetry", port=port, expect=503)
        self.assertEqual(self.error_of(r), "RouterUnavailable")
        r = self.call("POST", "/v1/telemetry/groups/{group}/commit", {"group": "g"}, port=port,
                      body={"partition": 0, "offset": -1}, expect=503)
        self.assertEqual(self.error_of(r), "RouterUnavailable")
        r = self.call("GET", "/v1/feedback", port=port, expect=503)
        self.assertEqual(self.error_of(r), "RouterUnavailable")
        r = self.call("POST", "/v1/feedback/groups/{group}/commit", {"group": "g"}, port=port,
                      body={"partition": 0, "offset": -1}, expect=503)
        self.assertEqual(self.error_of(r), "RouterUnavailable")
        r = self.call("POST", "/v1/devices:import", port=port, body='{"deviceId":"x"}\n', expect=503)
        self.assertEqual(self.error_of(r), "RouterUnavailable")
        r = self.call("GET", "/v1/devices", port=port, expect=503)
        self.assertEqual(self.error_of(r), "RouterUnavailable")
        r = self.call("GET", "/metrics", port=port, expect=200)
        self.assertIn("sacgate_router_up 0", r.text)
        for method, template, body in (("GET", "/v1/devices/{id}", None), ("PUT", "/v1/devices/{id}", {}),
                                       ("POST", "/v1/devices/{id}/messages", {"payload": "x"}),
                                       ("POST", "/v1/devices/{id}/keys:regenerate", {"key": "both"})):
            r = self.call(method, template, {"id": "lost-1"}, port=port, body=body, body_valid=True)
            self.assertIn(r.status, (503, 504), r)


class TierProbeTest(unittest.TestCase):
    """The /healthz and /readyz of a tier process (a router that reaches no shard)."""

    @classmethod
    def setUpClass(cls):
        cls.spec = load_spec()
        cls.dir = tempfile.mkdtemp(prefix="sgit-openapi-")
        cls.port = sgtest.free_port()
        cls.log = open(os.path.join(cls.dir, "router.log"), "ab")
        cls.proc = subprocess.Popen([sgtest.BIN, "router", "--name", "router-probe", "--bind",
                                     "tcp://127.0.0.1:%d" % sgtest.free_port(), "--shards", "s0=tcp://127.0.0.1:1",
                                     "--health-port", str(cls.port), "--set", "health.bind=127.0.0.1",
                                     "--set", "cluster.insecure=true"],
                                    stdout=cls.log, stderr=cls.log, stdin=subprocess.DEVNULL,
                                    preexec_fn=sgtest._pdeathsig)
        wait_until(lambda: sgtest._tcp_open(cls.port), 20, "the router's probe endpoint to listen")

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(15)
        cls.log.close()
        if not sgtest.KEEP:
            import shutil
            shutil.rmtree(cls.dir, ignore_errors=True)

    def req(self, method, template, expect):
        r = sgtest.http_request(self.port, method, template)
        self.spec.check_answer(template, method, r)
        self.assertEqual(r.status, expect, r)
        return r

    def test_probe_endpoint(self):
        r = self.req("GET", "/healthz", 200)
        self.assertEqual(r.json, {"status": "ok", "tier": "router"})
        self.req("HEAD", "/healthz", 200)
        r = self.req("GET", "/readyz", 503)
        self.assertEqual((r.json["status"], r.json["tier"]), ("unready", "router"))
        self.req("HEAD", "/readyz", 503)
        r = sgtest.http_request(self.port, "GET", "/metrics")
        self.assertEqual(r.status, 404, r)
        self.spec.check_generic("NotFound", r)
        r = sgtest.http_request(self.port, "POST", "/healthz", body="{}")
        self.assertEqual(r.status, 405, r)
        self.spec.check_generic("MethodNotAllowed", r)


class ZzCoverageTest(unittest.TestCase):
    """Runs last (unittest orders classes by name): every documented operation was called."""

    def test_every_documented_operation_was_exercised(self):
        if len(sys.argv) > 1:
            self.skipTest("only some tests were selected")
        missing = [(t, m) for t, m, op in load_spec().operations() if (t, m) not in COVERED]
        self.assertEqual(missing, [], "documented operations no test called")


if __name__ == "__main__":
    sgtest.main()
