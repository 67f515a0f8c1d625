// A toy main-application subgraph (@apollo/subgraph + @apollo/server), as the main app would
// compose with the collaboration service: it owns Patient, extends User and Room by key, and with
// `relay` pages its patients with a Relay PageInfo of its own (@shareable, as ours is).
// CLIENT_CONFIG: { port, relay, sdl } — with `sdl` it prints its subgraph SDL and exits.
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSubgraphSchema, printSubgraphSchema } from '@apollo/subgraph';
import { gql } from 'graphql-tag';

const config = JSON.parse(process.env.CLIENT_CONFIG ?? '{}');

const relay = `
  type PatientConnection { edges: [PatientEdge!]! pageInfo: PageInfo! }
  type PatientEdge { cursor: String! node: Patient! }
  type PageInfo @shareable {
    hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String
  }`;

const typeDefs = gql`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.7",
                      import: ["@key", "@shareable"])

  type Patient @key(fields: "id") {
    id: ID!
    mrn: String!
    careRoom: Room
    physician: User
  }
  type User @key(fields: "id") { id: ID! department: String }
  type Room @key(fields: "id") { id: ID! linkedPatients: [Patient!]! }

  type Query {
    patient(id: ID!): Patient
    "The patients of one ward (each test admits to a ward of its own)."
    ${config.relay ? 'patients(ward: String!, first: Int = 50): PatientConnection!'
                   : 'patients(ward: String!): [Patient!]!'}
    "The Authorization header this subgraph received (the gateway forwards the caller's)."
    callerAuthorization: String
  }
  type Mutation {
    admitPatient(ward: String!, mrn: String!, careRoomId: ID, physicianId: ID): Patient!
    assignDepartment(userId: ID!, department: String!): User!
  }
  ${config.relay ? relay : ''}
`;

const patients = new Map();
const departments = new Map();
const ref = (id) => (id ? { id } : null);

function page(list) {
  const edges = list.map((node) => ({ cursor: node.id, node }));
  return { edges, pageInfo: { hasNextPage: false, hasPreviousPage: false,
                              startCursor: edges[0]?.cursor ?? null,
                              endCursor: edges.at(-1)?.cursor ?? null } };
}

const resolvers = {
  Query: {
    patient: (_, { id }) => patients.get(id) ?? null,
    patients: (_, { ward, first }) => {
      const all = [...patients.values()].filter((p) => p.ward === ward);
      return config.relay ? page(all.slice(0, first)) : all;
    },
    callerAuthorization: (_, __, context) => context.authorization ?? null,
  },
  Mutation: {
    admitPatient: (_, { ward, mrn, careRoomId, physicianId }) => {
      const patient = { id: `patient-${patients.size + 1}`, ward, mrn, careRoomId, physicianId };
      patients.set(patient.id, patient);
      return patient;
    },
    assignDepartment: (_, { userId, department }) => {
      departments.set(userId, department);
      return { id: userId };
    },
  },
  Patient: {
    __resolveReference: ({ id }) => patients.get(id) ?? null,
    careRoom: (patient) => ref(patient.careRoomId),
    physician: (patient) => ref(patient.physicianId),
  },
  User: { department: ({ id }) => departments.get(id) ?? null },
  Room: {
    linkedPatients: ({ id }) => [...patients.values()].filter((p) => p.careRoomId === id),
  },
};

const schema = buildSubgraphSchema({ typeDefs, resolvers });
if (config.sdl) {
  process.stdout.write(printSubgraphSchema(schema));
} else {
  const server = new ApolloServer({ schema });
  const { url } = await startStandaloneServer(server, {
    listen: { host: '127.0.0.1', port: config.port },
    context: async ({ req }) => ({ authorization: req.headers.authorization }),
  });
  console.log(`main app subgraph at ${url}`);
}
