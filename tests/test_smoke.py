from tests.personas import People, make_room


async def test_me_and_create_room(people: People) -> None:
    doc = people.make_user("doctor", "Dr House")
    data = await doc.gql("{ me { id displayName role } }")
    assert data["me"] == {"id": doc.id, "displayName": "Dr House", "role": "DOCTOR"}
    room = await make_room(doc)
    data = await doc.gql("query($id: ID!) { room(id: $id) { name host { displayName } "
                         "participants { role user { id } } participantCount "
                         "myMembership { role } } }",
                         id=room["id"])
    assert data["room"]["participantCount"] == 1
    assert data["room"]["host"]["displayName"] == "Dr House"
