"""The committed openapi/openapi.json is what the app generates (regenerate it with
`python -m rocr.service.openapi`)."""

import json
from functools import cache
from pathlib import Path

from rocr.service import openapi

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
document = cache(openapi.document)


def test_committed_openapi_matches_the_app():
    assert COMMITTED.read_text() == document(), (
        "openapi/openapi.json differs from the app: run python -m rocr.service.openapi"
    )


def test_document_describes_errors_security_and_binary_bodies():
    doc = json.loads(document())
    schemas = doc["components"]["schemas"]
    assert {"status", "code", "message"} <= set(schemas["ErrorBody"]["properties"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    put = doc["paths"]["/v1/systems/{system_id}/queues/{queue_id}/packets/{index}"]["put"]
    content = put["requestBody"]["content"]
    assert set(content) == {"application/octet-stream", "application/json"}
    ref = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    kinds = json.dumps(schemas[ref])
    assert "KernelDispatchPacketBody" in kinds and "RawPacket" in kinds
    assert "KernelDispatchPacketBody" in schemas
